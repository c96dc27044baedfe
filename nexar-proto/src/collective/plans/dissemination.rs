//! Dissemination barrier: `ceil(log2 p)` steps of zero-length messages.
//!
//! In step `k` every rank signals `r + 2^k` and waits for `r - 2^k`. After step `k` a
//! rank has heard, directly or through others, from the `2^(k+1) - 1` ranks before it, so
//! after `ceil(log2 p)` steps from everyone: no rank leaves before all have arrived. Unlike
//! a tree barrier there is no root to fan in to and out from, so it takes half the steps.

use super::{ahead, behind, ceil_log2, Builder};
use crate::codec::Algorithm;
use crate::collective::plan::Plan;

/// The barrier; the working buffer is empty and every message is `0..0`.
pub(crate) fn barrier(world: usize, rank: usize) -> Plan {
    let mut b = Builder::default();
    for k in 0..ceil_log2(world) {
        let d = 1 << k;
        b.send(k, ahead(rank, d, world), 0..0);
        b.recv(k, behind(rank, d, world), 0..0, false);
    }
    b.finish(Algorithm::Dissemination, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_a_message_even_with_no_data() {
        let plan = barrier(5, 4);
        assert_eq!(plan.steps.len(), 3);
        let peers: Vec<_> = plan
            .steps
            .iter()
            .map(|s| (s.sends[0].peer, s.recvs[0].peer))
            .collect();
        assert_eq!(peers, [(0, 3), (1, 2), (3, 0)]);
        assert!(barrier(1, 0).steps.is_empty());
    }
}
