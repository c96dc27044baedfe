//! Epoch changes as pure functions: who keeps which rank.
//!
//! Ranks are dense (0..n) and survivors keep their relative order across every change,
//! so a rank's new number depends only on the agreed message, never on local state.
//! Joiners take the ranks after everyone who stays, in the seed's queue order.

use std::collections::{BTreeMap, BTreeSet};

/// Old rank → new rank for everyone who stays, given the ranks that go.
pub(crate) fn renumber(world_size: u32, gone: &BTreeSet<u32>) -> BTreeMap<u32, u32> {
    (0..world_size)
        .filter(|r| !gone.contains(r))
        .enumerate()
        .map(|(new, old)| (old, new as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn survivors_keep_their_order_densely() {
        let gone: BTreeSet<u32> = [1, 3].into_iter().collect();
        let map = renumber(5, &gone);
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            vec![(0, 0), (2, 1), (4, 2)]
        );
    }

    proptest! {
        #[test]
        fn renumbering_is_dense_and_monotone(world in 1u32..64, gone in proptest::collection::btree_set(0u32..64, 0..8)) {
            let map = renumber(world, &gone);
            let news: Vec<u32> = map.values().copied().collect();
            prop_assert_eq!(news, (0..map.len() as u32).collect::<Vec<_>>());
            prop_assert!(map.keys().all(|r| *r < world && !gone.contains(r)));
            prop_assert_eq!(map.len() as u32, world - gone.iter().filter(|r| **r < world).count() as u32);
        }
    }
}
