//! Communicators: ordered groups of world ranks, each with its own sequence numbers.

use sha2::{Digest, Sha256};

/// Names a communicator. The world communicator is `CommId::WORLD`; others come from
/// `split` and carry an id every member derives identically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommId(pub u64);

impl CommId {
    /// Every rank of the world, in rank order.
    pub const WORLD: CommId = CommId(0);
}

/// One communicator as seen by this rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Communicator {
    pub(crate) id: CommId,
    /// World rank of each communicator rank, in communicator rank order.
    pub(crate) members: Vec<u32>,
    /// Our rank within the communicator.
    pub(crate) me: u32,
    /// Sequence number the next operation on this communicator gets.
    pub(crate) next_seq: u64,
}

impl Communicator {
    pub(crate) fn world(world_size: u32, my_rank: u32) -> Self {
        Self {
            id: CommId::WORLD,
            members: (0..world_size).collect(),
            me: my_rank,
            next_seq: 0,
        }
    }

    pub(crate) fn size(&self) -> u32 {
        self.members.len() as u32
    }

    /// The communicator rank of a world rank, if it is a member.
    pub(crate) fn rank_of(&self, world_rank: u32) -> Option<u32> {
        self.members
            .iter()
            .position(|r| *r == world_rank)
            .map(|p| p as u32)
    }

    /// The world rank of a communicator rank.
    pub(crate) fn world_rank(&self, comm_rank: u32) -> u32 {
        self.members[comm_rank as usize]
    }

    /// MPI_Comm_split: members with our color, ordered by (key, parent rank).
    ///
    /// `contributions[r]` is parent rank r's (color, key); `None` colour means "no new
    /// communicator" (MPI_UNDEFINED). The id hashes (epoch, parent id, parent seq,
    /// colour), so every member computes the same id without a message and different
    /// splits differ. The epoch is in it because sequence numbers start again at every
    /// epoch: without it the first split of a new epoch would get the id of the old
    /// epoch's first split, and a handle to the dead one would address the new one.
    pub(crate) fn split(
        &self,
        epoch: u64,
        parent_seq: u64,
        contributions: &[(Option<u32>, i64)],
    ) -> Option<Communicator> {
        let (color, _) = contributions.get(self.me as usize).copied()?;
        let color = color?;
        let mut group: Vec<(i64, u32)> = contributions
            .iter()
            .enumerate()
            .filter(|(_, (c, _))| *c == Some(color))
            .map(|(r, (_, k))| (*k, r as u32))
            .collect();
        group.sort_unstable();
        let members: Vec<u32> = group.iter().map(|(_, r)| self.world_rank(*r)).collect();
        let me = group.iter().position(|(_, r)| *r == self.me)? as u32;
        let mut h = Sha256::new();
        h.update(b"nexar-comm-split");
        h.update(epoch.to_le_bytes());
        h.update(self.id.0.to_le_bytes());
        h.update(parent_seq.to_le_bytes());
        h.update(color.to_le_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        // Never collide with the world id.
        let id = CommId(u64::from_le_bytes(id).max(1));
        Some(Communicator {
            id,
            members,
            me,
            next_seq: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_orders_by_key_then_rank() {
        let world = Communicator::world(5, 3);
        let c = [
            (Some(1), 0),
            (Some(2), 0),
            (Some(1), -5),
            (Some(1), 0),
            (None, 0),
        ];
        let sub = world.split(1, 7, &c).unwrap();
        assert_eq!(sub.members, vec![2, 0, 3]);
        assert_eq!(sub.me, 2);
        let other = Communicator::world(5, 1).split(1, 7, &c).unwrap();
        assert_eq!(other.members, vec![1]);
        assert_ne!(sub.id, other.id);
        assert!(Communicator::world(5, 4).split(1, 7, &c).is_none());
        // The same split in the next epoch makes another communicator.
        let next = world.split(2, 7, &c).unwrap();
        assert_eq!(next.members, sub.members);
        assert_ne!(next.id, sub.id);
    }
}
