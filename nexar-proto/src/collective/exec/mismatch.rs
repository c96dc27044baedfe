//! Mismatch handling: comparing fingerprints and spreading aborts (see the module docs
//! of `exec` for the protocol).

use super::{CommId, ExecOutput, Executor, ABORT_STEP};
use crate::codec::{Chunk, ChunkHeader, Fingerprint, Message, Pieces};
use crate::error::OpError;

impl Executor {
    /// An abort for an operation that is running or has ended here (one not started yet
    /// is held until it starts; see `on_chunk`).
    ///
    /// An honest abort carries its sender's own fingerprint. For a running operation a
    /// different one is a mismatch. For an ended one it is believed only if we can
    /// neither confirm nor refute it: an equal fingerprint, one contradicting what the
    /// sender itself told us in that operation, an operation that already failed here
    /// (the application has its error), or one too old to judge, are ignored and
    /// counted, so a forged abort cannot fail an operation it does not name.
    pub(super) fn on_abort(
        &mut self,
        key: (u64, u64),
        peer: u32,
        theirs: Option<Fingerprint>,
        out: &mut Vec<ExecOutput>,
    ) {
        let Some(theirs) = theirs else {
            self.counters.aborts_ignored += 1;
            return;
        };
        if let Some(mine) = self.ops.get(&key).map(|o| o.run.fp) {
            if mine != theirs {
                let err = self.mismatch_error(key.0, key.1, peer, theirs);
                self.fail(key.0, key.1, err, out);
            }
            return self.send_abort(key.0, key.1, out);
        }
        let believed = match self.ended.iter().find(|e| e.key == key) {
            Some(e) => !e.failed && e.fp != theirs && !e.checked.contains(&peer),
            None => false,
        };
        if !believed {
            self.counters.aborts_ignored += 1;
            return;
        }
        // Finished here while others mismatched: the next operation on this
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
        self.send_abort(key.0, key.1, out);
    }

    /// Tell every member our fingerprint for (comm, seq), once.
    pub(super) fn send_abort(&mut self, comm: u64, seq: u64, out: &mut Vec<ExecOutput>) {
        // Only for operations we ran (so the set stays as small as the ones we know).
        let Some(fp) = self.flight_fp(comm, seq) else {
            return;
        };
        if !self.aborts_sent.insert((comm, seq)) {
            return;
        }
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
