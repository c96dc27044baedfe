//! Pairwise exchange all-to-all: `p - 1` steps, one block each way per step.
//!
//! In step `s`, rank `r` sends its block for `r + s + 1` and receives the block from
//! `r - s - 1`, so every step is a permutation (no rank is the target of two senders)
//! and any world size works, not only powers of two as with XOR pairing. Sends read the
//! buffer at the start of a step while recvs land later in it, which would overwrite
//! blocks not yet sent if input and output shared storage, so they do not: input is
//! `0..p*count`, output `p*count..2*p*count`; a rank's own block is a local copy.

use super::{ahead, behind, span, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// All-to-all with `count` elements per (source, destination) pair. One rank alone has
/// nothing to move: its layout puts input and output on the same range.
pub(crate) fn alltoall(count: usize, world: usize, rank: usize) -> Plan {
    if world == 1 {
        return Builder::default().finish(Algorithm::Pairwise, count);
    }
    let out = world * count;
    let output = |block: usize| {
        let s = span(block, 1, count);
        out + s.start..out + s.end
    };
    let mut b = Builder::default();
    for s in 0..world - 1 {
        let to = ahead(rank, s + 1, world);
        let from = behind(rank, s + 1, world);
        b.send(s, to, span(to, 1, count));
        b.recv(s, from, output(from), false);
    }
    b.local(0, span(rank, 1, count), output(rank).start, false);
    b.finish(Algorithm::Pairwise, 2 * out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_a_permutation() {
        let world = 7;
        for s in 0..world - 1 {
            let mut targets: Vec<u32> = (0..world)
                .map(|r| alltoall(1, world, r).steps[s].sends[0].peer)
                .collect();
            targets.sort_unstable();
            assert_eq!(targets, (0..world as u32).collect::<Vec<_>>());
        }
    }
}
