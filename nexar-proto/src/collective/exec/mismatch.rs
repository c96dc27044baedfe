//! Mismatch handling: comparing fingerprints and spreading aborts (see the module docs
//! of `exec` for the protocol).

use super::{CommId, ExecOutput, Executor, ABORT_STEP};
use crate::codec::{Chunk, ChunkHeader, Fingerprint, Message, Pieces};
use crate::error::OpError;

impl Executor {
    pub(super) fn on_abort(
        &mut self,
        key: (u64, u64),
        peer: u32,
        theirs: Option<Fingerprint>,
        out: &mut Vec<ExecOutput>,
    ) {
        let Some(theirs) = theirs else { return };
        let mine = self.ops.get(&key).map(|o| o.run.fp);
        match mine {
            Some(fp) if fp != theirs => {
                let err = self.mismatch_error(key.0, key.1, peer, theirs);
                self.fail(key.0, key.1, err, out);
            }
            Some(_) => {}
            None => {
                // Already finished here (or never started): the next operation on this
                // communicator reports it, so the application still hears of it.
                let err = OpError::Mismatch {
                    comm: key.0,
                    seq: key.1,
                    field: "unknown (finished locally)",
                    rank: self.me,
                    peer: self.world_rank(key.0, peer),
                    flight: self.flight.snapshot(),
                };
                self.poisoned.entry(key.0).or_insert(err);
            }
        }
        self.send_abort(key.0, key.1, out);
    }

    /// Tell every member our fingerprint for (comm, seq), once.
    pub(super) fn send_abort(&mut self, comm: u64, seq: u64, out: &mut Vec<ExecOutput>) {
        if !self.aborts_sent.insert((comm, seq)) {
            return;
        }
        let Some(fp) = self.flight_fp(comm, seq) else {
            return;
        };
        let Some(c) = self.comms.get(&CommId(comm)) else {
            return;
        };
        for &to in c.members.iter().filter(|r| **r != self.me) {
            let chunk = Chunk {
                header: ChunkHeader {
                    epoch: self.epoch,
                    comm,
                    seq,
                    algorithm: fp.algorithm,
                    step: ABORT_STEP,
                    offset: 0,
                },
                fingerprint: Some(fp),
                payload: Pieces::default(),
            };
            out.push(ExecOutput::Send {
                to,
                frame: Message::Chunk(chunk).to_frame(),
                bulk: Pieces::default(),
            });
        }
    }

    /// Our fingerprint for an operation, running or recorded.
    fn flight_fp(&self, comm: u64, seq: u64) -> Option<Fingerprint> {
        if let Some(op) = self.ops.get(&(comm, seq)) {
            return Some(op.run.fp);
        }
        self.flight
            .snapshot()
            .0
            .into_iter()
            .find(|e| e.comm == comm && e.seq == seq)
            .map(|e| Fingerprint {
                kind: e.kind,
                dtype: e.dtype,
                op: e.op,
                count: e.count,
                root: e.root,
                algorithm: e.algorithm,
            })
    }

    pub(super) fn mismatch_error(
        &self,
        comm: u64,
        seq: u64,
        peer: u32,
        theirs: Fingerprint,
    ) -> OpError {
        let mine = self.ops.get(&(comm, seq)).map(|o| o.run.fp);
        let field = mine.map_or("unknown", |m| differing_field(&m, &theirs));
        OpError::Mismatch {
            comm,
            seq,
            field,
            rank: self.me,
            peer: self.world_rank(comm, peer),
            flight: self.flight.snapshot(),
        }
    }
}

/// The first field in which two fingerprints differ, as users would name it.
fn differing_field(a: &Fingerprint, b: &Fingerprint) -> &'static str {
    if a.kind != b.kind {
        "kind"
    } else if a.dtype != b.dtype {
        "dtype"
    } else if a.count != b.count {
        "count"
    } else if a.root != b.root {
        "root"
    } else if a.op != b.op {
        "op"
    } else {
        "algorithm"
    }
}
