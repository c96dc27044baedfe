//! Starting an operation, apart from running it: this is the one place a command becomes
//! an operation (checks, algorithm, plan, layout, working buffer, flight entry), and the
//! code in `mod.rs` that moves chunks and finishes operations never needs any of it.

use std::time::{Duration, Instant};

use super::validate::validate;
use super::{ExecOutput, Executor, Op, Purpose};
use crate::codec::{CollectiveKind, Fingerprint, ReduceOp};
use crate::collective::buffer::Buffer;
use crate::collective::comm::CommId;
use crate::collective::flight::{FlightEntry, FlightState};
use crate::collective::running::Running;
use crate::collective::select::select;
use crate::collective::spec::{layout_of, CollectiveSpec};
use crate::error::CommandError;
use crate::event::OpId;

impl Executor {
    /// Start a collective: `call` is (kind, reduction, root, count) as in
    /// `Command::Collective`. `input` is the user's data (its length is checked against
    /// the layout); the result comes back in `Completed` as `Outcome::Collective`. It
    /// fails with `OpError::Timeout` past `timeout`, or the configured timeout if `None`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        now: Instant,
        id: OpId,
        comm: CommId,
        call: (CollectiveKind, ReduceOp, u32, usize),
        input: Buffer,
        timeout: Option<Duration>,
        out: &mut Vec<ExecOutput>,
    ) -> Result<(), CommandError> {
        let (kind, op, root, count) = call;
        let deadline = now + timeout.unwrap_or(self.config.timeout);
        self.start_purpose(
            now,
            id,
            comm,
            kind,
            op,
            root,
            count,
            input,
            (Purpose::User, deadline),
            out,
        )
    }

    /// MPI_Comm_split over `comm`: an allgather of (colour, key), then a local decision.
    pub(crate) fn split(
        &mut self,
        now: Instant,
        id: OpId,
        comm: CommId,
        color: Option<u32>,
        key: i64,
        out: &mut Vec<ExecOutput>,
    ) -> Result<(), CommandError> {
        let parent_seq = self
            .comms
            .get(&comm)
            .ok_or(CommandError::UnknownCommunicator { comm })?
            .next_seq;
        let color = color.map_or(u64::MAX, u64::from);
        let input = Buffer::from_vec(vec![color, key as u64]);
        let purpose = (Purpose::Split { parent_seq }, now + self.config.timeout);
        self.start_purpose(
            now,
            id,
            comm,
            CollectiveKind::AllGather,
            ReduceOp::None,
            0,
            2,
            input,
            purpose,
            out,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_purpose(
        &mut self,
        now: Instant,
        id: OpId,
        comm_id: CommId,
        kind: CollectiveKind,
        op: ReduceOp,
        root: u32,
        count: usize,
        input: Buffer,
        (purpose, deadline): (Purpose, Instant),
        out: &mut Vec<ExecOutput>,
    ) -> Result<(), CommandError> {
        let comm = self
            .comms
            .get(&comm_id)
            .ok_or(CommandError::UnknownCommunicator { comm: comm_id })?;
        let me = comm.me;
        let spec = CollectiveSpec {
            kind,
            dtype: input.dtype(),
            op,
            count,
            root,
        };
        validate(&spec, comm.size())?;
        let algorithm = select(&spec, comm.size(), &self.config.collective);
        let (size, me_in_comm) = (comm.size(), comm.me);
        let plan = self
            .plans
            .get(&spec, size, me_in_comm, algorithm)
            .map_err(|e| CommandError::InvalidCollective {
                detail: e.to_string(),
            })?;
        let layout = layout_of(&spec, size, me_in_comm, plan.buffer_len);
        let in_place = layout.in_place(input.len());
        if input.len() != layout.input.len() && !in_place {
            return Err(CommandError::BufferLength {
                expected: layout.input.len(),
                got: input.len(),
            });
        }
        // The input is the working buffer when it covers it (allreduce, broadcast,
        // reduce) or when it is the output passed in place: no second allocation, no
        // zero-filling and no copy of the user's data.
        let mut buf = if layout.input == (0..layout.buffer_len)
            || (in_place && input.len() == layout.buffer_len)
        {
            input
        } else {
            let from = if in_place {
                layout.input.clone()
            } else {
                0..input.len()
            };
            let mut buf = input.zeros_like(layout.buffer_len);
            buf.copy_from(layout.input.start, &input, from);
            buf
        };
        if !layout.fill_identity.is_empty() {
            buf.fill_identity(layout.fill_identity.clone(), op);
        }
        let seq = comm.next_seq;
        if let Some(err) = self.poisoned.remove(&comm_id.0) {
            out.push(ExecOutput::Completed {
                op: id,
                outcome: Err(err),
            });
            return Ok(());
        }
        if let Some(c) = self.comms.get_mut(&comm_id) {
            c.next_seq += 1;
        }
        let fp = Fingerprint {
            kind,
            dtype: spec.dtype,
            op,
            count: count as u64,
            root,
            algorithm,
        };
        self.flight.start(FlightEntry {
            comm: comm_id.0,
            seq,
            kind,
            dtype: spec.dtype,
            op,
            count: count as u64,
            root,
            algorithm,
            started: now.saturating_duration_since(self.started),
            state: FlightState::Running { step: 0 },
        });
        let seg = (self.config.collective.segment_bytes / spec.dtype.size()).max(1);
        let run = Running::new(
            spec, fp, comm_id.0, seq, self.epoch, plan, layout, buf, seg, me,
        );
        self.ops.insert(
            (comm_id.0, seq),
            Op {
                id,
                purpose,
                deadline,
                run,
            },
        );
        let mut sends = Vec::new();
        let mut result = Ok(());
        if let Some(op) = self.ops.get_mut(&(comm_id.0, seq)) {
            op.run.begin(&mut sends);
            // Steps with nothing to receive (a root's sends) complete at once.
            result = op.run.settle(&mut sends);
        }
        self.after_progress(comm_id.0, seq, sends, result, out);
        // Chunks that came before we started, in arrival order.
        let early = self.early.take((comm_id.0, seq));
        if !early.is_empty() {
            for (from, chunk) in early {
                self.on_chunk(from, chunk, out);
            }
            self.maybe_resume(out);
        }
        Ok(())
    }
}
