//! The algorithms: one file per [`Algorithm`], each turning (count, world, rank, root)
//! into one rank's [`Plan`].
//!
//! Plans are pure and cheap: every rank builds its own from the same inputs and they
//! agree without a message. Every plan here is correct for any world size (powers of two,
//! odd, prime) and any count, including `count < world`, where some blocks are empty and
//! their transfers are zero-length messages: still sent and received, so that every
//! collective synchronises the same way whatever its size.
//!
//! [`spec::layout`](super::spec::layout) says where input and output sit in the working
//! buffer; the functions here assume that layout (the mailbox tests check that they
//! agree for every kind, algorithm, world and rank).

use std::ops::Range;

use super::plan::{Local, Plan, Recv, Step, Transfer};
use crate::codec::Algorithm;

pub(crate) mod binomial;
pub(crate) mod dissemination;
pub(crate) mod halving_doubling;
pub(crate) mod pairwise;
pub(crate) mod pipelined;
pub(crate) mod recursive_doubling;
pub(crate) mod reduce_scatter_gather;
pub(crate) mod ring;
pub(crate) mod scatter_allgather;

#[cfg(test)]
mod tests;

/// Splits `count` elements into `parts` contiguous blocks whose sizes differ by at most
/// one, the larger ones first (`count < parts` gives some empty blocks).
///
/// Every algorithm that cuts one buffer into per-rank pieces uses this, so that ranks
/// and algorithms agree on the boundaries. `parts` must be at least 1.
pub fn blocks(count: usize, parts: usize) -> Vec<Range<usize>> {
    assert!(parts > 0, "a buffer is split into at least one block");
    let (base, extra) = (count / parts, count % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let block = start..start + len;
            start += len;
            block
        })
        .collect()
}

/// `ceil(log2(n))` for `n >= 1`: the rounds of a doubling or halving schedule.
pub(crate) fn ceil_log2(n: usize) -> usize {
    debug_assert!(n > 0);
    (usize::BITS - (n - 1).leading_zeros()) as usize
}

/// The largest power of two not above `n` (`n >= 1`).
pub(crate) fn floor_pow2(n: usize) -> usize {
    debug_assert!(n > 0);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `(rank + d) mod world`.
pub(crate) fn ahead(rank: usize, d: usize, world: usize) -> usize {
    (rank + d % world) % world
}

/// `(rank - d) mod world`.
pub(crate) fn behind(rank: usize, d: usize, world: usize) -> usize {
    (rank + world - d % world) % world
}

/// Rank as it travels in a plan. Ranks come from a `u32` world size, so this never
/// truncates.
fn peer(rank: usize) -> u32 {
    u32::try_from(rank).expect("ranks are below a u32 world size")
}

/// Collects one rank's steps by index, so that an algorithm can be written phase by
/// phase (or edge by edge of a tree) without caring in which order steps fill up.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    steps: Vec<Step>,
}

impl Builder {
    fn at(&mut self, step: usize) -> &mut Step {
        if self.steps.len() <= step {
            self.steps.resize_with(step + 1, Step::default);
        }
        &mut self.steps[step]
    }

    /// Send `range` to `to` in `step`.
    pub(crate) fn send(&mut self, step: usize, to: usize, range: Range<usize>) {
        let peer = peer(to);
        self.at(step).sends.push(Transfer { peer, range });
    }

    /// Receive from `from` into `range` in `step`, reducing or copying.
    pub(crate) fn recv(&mut self, step: usize, from: usize, range: Range<usize>, reduce: bool) {
        let peer = peer(from);
        self.at(step).recvs.push(Recv {
            peer,
            range,
            reduce,
        });
    }

    /// After the recvs of `step`: `dst.. = src` or `op(dst.., src)`. Empty ranges are
    /// dropped (they would do nothing).
    pub(crate) fn local(&mut self, step: usize, src: Range<usize>, dst: usize, reduce: bool) {
        if !src.is_empty() {
            self.at(step).locals.push(Local { src, dst, reduce });
        }
    }

    /// The plan. Trailing empty steps are dropped, so a rank whose part ends early (a
    /// leaf of a tree) completes early; empty steps in the middle stay, because steps
    /// are matched across ranks by index.
    pub(crate) fn finish(mut self, algorithm: Algorithm, buffer_len: usize) -> Plan {
        while self
            .steps
            .last()
            .is_some_and(|s| s.sends.is_empty() && s.recvs.is_empty() && s.locals.is_empty())
        {
            self.steps.pop();
        }
        Plan {
            algorithm,
            buffer_len,
            steps: self.steps,
        }
    }
}

/// `len` consecutive blocks of `block` elements starting at block `first`, as one range
/// (for layouts with one fixed-size block per rank).
pub(crate) fn span(first: usize, len: usize, block: usize) -> Range<usize> {
    first * block..(first + len) * block
}

/// The union of `blocks[parts]`, which are contiguous (for layouts cut by [`blocks`]).
pub(crate) fn union(blocks: &[Range<usize>], parts: Range<usize>) -> Range<usize> {
    debug_assert!(!parts.is_empty());
    blocks[parts.start].start..blocks[parts.end - 1].end
}
