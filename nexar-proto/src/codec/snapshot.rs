//! The seed's persisted state: what it takes to come back as the same seed of the same
//! cluster after a crash.
//!
//! Nothing here is a wire message: the core produces and consumes these bytes
//! ([`Node::seed_snapshot`](crate::Node::seed_snapshot),
//! [`Node::seed_restore`](crate::Node::seed_restore)) and the driver keeps them in a file.
//! The identity key, the CA key and certificate and the cluster id all derive from
//! `rng_seed` and `unix_time`, so those 40 bytes stand for all of them: **the snapshot
//! holds private key material** (whoever reads it can act as the seed and sign members'
//! certificates) and must be written readable by its owner only (mode 0600).
//!
//! Layout (little-endian, fixed order, no trailing bytes):
//! `"NXSS"` magic, version `1`, rng seed (32), unix time (u64), incarnation (u64), listen
//! address, join secret (32), world size (u32), max world size (u32), max pending joins
//! (u32), formed (0/1), epoch (u64), next member id (u32), member count (u32), then per
//! member in rank order: member id (u32), address, incarnation (u64), SHA-256 of its
//! public key (32).
//!
//! The decoder treats the file as untrusted input, like a frame: every count is checked
//! against [`Limits::max_peers`] and the bytes present before allocating, and the content
//! must be coherent (ids unique and below the next id, the world within its limits).

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::wire::{self, Reader, ADDR_MIN_LEN};
use super::{DecodeError, Limits};

/// One member of the formed cluster as the seed persists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMember {
    /// The id its certificate names (never reused).
    pub id: u32,
    /// Where peers dial it.
    pub addr: SocketAddr,
    /// Its incarnation.
    pub incarnation: u64,
    /// SHA-256 of its public key (DER SubjectPublicKeyInfo, from its certificate
    /// request): how the seed recognises it when it reconnects.
    pub key_sha256: [u8; 32],
}

impl SnapshotMember {
    const MIN_LEN: usize = 4 + ADDR_MIN_LEN + 8 + 32;
}

/// Everything the seed needs to come back as itself.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedSnapshot {
    /// The node's seed: identity, CA and cluster id derive from it (secret).
    pub rng_seed: [u8; 32],
    /// The wall-clock start the certificates were issued from.
    pub unix_time: u64,
    /// The incarnation of the life that wrote this snapshot; a restored seed takes the
    /// next one, so it never replays the randomness of an earlier life.
    pub incarnation: u64,
    /// The address in the ticket, which the restored seed must bind again.
    pub addr: SocketAddr,
    /// The join secret (secret).
    pub secret: [u8; 32],
    /// The world size formation waited for.
    pub world_size: u32,
    /// Elastic limit: the largest world.
    pub max_world_size: u32,
    /// Elastic limit: the most joiners queued for a checkpoint.
    pub max_pending_joins: u32,
    /// Whether the cluster formed (if not, formation starts over).
    pub formed: bool,
    /// The current membership epoch.
    pub epoch: u64,
    /// The next member id to give a joiner.
    pub next_member: u32,
    /// The members in rank order (empty before formation).
    pub members: Vec<SnapshotMember>,
}

impl std::fmt::Debug for SeedSnapshot {
    // The seed and secret stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSnapshot")
            .field("incarnation", &self.incarnation)
            .field("addr", &self.addr)
            .field("world_size", &self.world_size)
            .field("formed", &self.formed)
            .field("epoch", &self.epoch)
            .field("next_member", &self.next_member)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not a seed snapshot (the first four bytes are not `"NXSS"`).
    #[error("not a seed snapshot (magic {found:02x?})")]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// Written by a version this build cannot read.
    #[error("snapshot version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A field is truncated, too large or out of its domain.
    #[error("malformed snapshot: {0}")]
    Decode(#[from] DecodeError),
    /// Bytes after the last member: the file is corrupt.
    #[error("{len} trailing bytes after the snapshot")]
    TrailingBytes {
        /// How many.
        len: usize,
    },
    /// The fields decode but do not describe a possible seed.
    #[error("incoherent snapshot: {0}")]
    Incoherent(&'static str),
}

impl SeedSnapshot {
    /// The magic that starts every snapshot.
    pub const MAGIC: [u8; 4] = *b"NXSS";
    /// The layout version this build writes and reads.
    pub const VERSION: u8 = 1;

    /// The snapshot's bytes.
    pub fn encode(&self) -> Bytes {
        let members: usize = self
            .members
            .iter()
            .map(|m| 4 + wire::addr_len(&m.addr) + 8 + 32)
            .sum();
        let mut out = BytesMut::with_capacity(128 + members);
        out.put_slice(&Self::MAGIC);
        out.put_u8(Self::VERSION);
        out.put_slice(&self.rng_seed);
        out.put_u64_le(self.unix_time);
        out.put_u64_le(self.incarnation);
        wire::put_addr(&mut out, &self.addr);
        out.put_slice(&self.secret);
        out.put_u32_le(self.world_size);
        out.put_u32_le(self.max_world_size);
        out.put_u32_le(self.max_pending_joins);
        out.put_u8(u8::from(self.formed));
        out.put_u64_le(self.epoch);
        out.put_u32_le(self.next_member);
        wire::put_len(&mut out, self.members.len());
        for m in &self.members {
            out.put_u32_le(m.id);
            wire::put_addr(&mut out, &m.addr);
            out.put_u64_le(m.incarnation);
            out.put_slice(&m.key_sha256);
        }
        out.freeze()
    }

    /// Decode and check a snapshot; at most `limits.max_peers` members.
    pub fn decode(data: &[u8], limits: &Limits) -> Result<Self, SnapshotError> {
        let magic = data.get(..4).unwrap_or(data);
        if magic != Self::MAGIC {
            return Err(SnapshotError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let mut r = Reader::new(Bytes::copy_from_slice(&data[4..]));
        let version = r.u8("snapshot.version")?;
        if version != Self::VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: Self::VERSION,
            });
        }
        let snapshot = SeedSnapshot {
            rng_seed: r.array("snapshot.rng_seed")?,
            unix_time: r.u64("snapshot.unix_time")?,
            incarnation: r.u64("snapshot.incarnation")?,
            addr: r.addr("snapshot.addr")?,
            secret: r.array("snapshot.secret")?,
            world_size: r.u32("snapshot.world_size")?,
            max_world_size: r.u32("snapshot.max_world_size")?,
            max_pending_joins: r.u32("snapshot.max_pending_joins")?,
            formed: r.present("snapshot.formed")?,
            epoch: r.u64("snapshot.epoch")?,
            next_member: r.u32("snapshot.next_member")?,
            members: r.vec(
                "snapshot.members",
                SnapshotMember::MIN_LEN,
                limits.max_peers,
                |r| {
                    Ok(SnapshotMember {
                        id: r.u32("snapshot.members.id")?,
                        addr: r.addr("snapshot.members.addr")?,
                        incarnation: r.u64("snapshot.members.incarnation")?,
                        key_sha256: r.array("snapshot.members.key_sha256")?,
                    })
                },
            )?,
        };
        let rest = r.remaining();
        if rest != 0 {
            return Err(SnapshotError::TrailingBytes { len: rest });
        }
        snapshot.check()?;
        Ok(snapshot)
    }

    /// The invariants any seed's state keeps.
    fn check(&self) -> Result<(), SnapshotError> {
        let bad = |why| Err(SnapshotError::Incoherent(why));
        if self.world_size == 0 {
            return bad("world size 0");
        }
        if self.max_world_size < self.world_size {
            return bad("max world size below the world size");
        }
        if self.members.len() > self.max_world_size as usize {
            return bad("more members than the max world size");
        }
        if !self.formed && (!self.members.is_empty() || self.epoch != 1) {
            return bad("members or epoch changes before formation");
        }
        if self.epoch == 0 {
            return bad("epoch 0");
        }
        let mut ids: Vec<u32> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return bad("a member id appears twice");
        }
        if ids.last().is_some_and(|&id| id >= self.next_member) {
            return bad("a member id at or above the next id");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::strategies::arb_addr;

    fn sample() -> SeedSnapshot {
        SeedSnapshot {
            rng_seed: [1; 32],
            unix_time: 1_767_225_600,
            incarnation: 2,
            addr: "192.0.2.1:7000".parse().unwrap(),
            secret: [9; 32],
            world_size: 2,
            max_world_size: 4,
            max_pending_joins: 3,
            formed: true,
            epoch: 5,
            next_member: 4,
            members: vec![
                SnapshotMember {
                    id: 0,
                    addr: "192.0.2.2:7001".parse().unwrap(),
                    incarnation: 0,
                    key_sha256: [0xaa; 32],
                },
                SnapshotMember {
                    id: 3,
                    addr: "[2001:db8::3]:7002".parse().unwrap(),
                    incarnation: 7,
                    key_sha256: [0xbb; 32],
                },
            ],
        }
    }

    #[test]
    fn round_trips_with_a_pinned_length() {
        let s = sample();
        let bytes = s.encode();
        // 4 + 1 + 32 + 8 + 8 + 7 + 32 + 4 + 4 + 4 + 1 + 8 + 4 + 4, then members of
        // 4 + 7 + 8 + 32 and 4 + 19 + 8 + 32.
        assert_eq!(bytes.len(), 121 + 51 + 63);
        assert_eq!(&bytes[..5], b"NXSS\x01");
        assert_eq!(SeedSnapshot::decode(&bytes, &Limits::DEFAULT), Ok(s));
    }

    #[test]
    fn the_fuzz_seed_corpus_holds_a_valid_snapshot() {
        let formed = include_bytes!("../../../fuzz/corpus/seed_snapshot/formed-2");
        let s = SeedSnapshot::decode(formed, &Limits::DEFAULT).unwrap();
        assert_eq!((s.formed, s.epoch, s.members.len()), (true, 4, 2));
        let unformed = include_bytes!("../../../fuzz/corpus/seed_snapshot/unformed");
        assert!(
            !SeedSnapshot::decode(unformed, &Limits::DEFAULT)
                .unwrap()
                .formed
        );
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(SeedSnapshot::decode(&bytes[..len], &Limits::DEFAULT).is_err());
        }
    }

    #[test]
    fn foreign_or_corrupt_files_are_refused() {
        let limits = Limits::DEFAULT;
        let bytes = sample().encode().to_vec();
        assert!(matches!(
            SeedSnapshot::decode(b"NX\x01", &limits),
            Err(SnapshotError::BadMagic { .. })
        ));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(
            SeedSnapshot::decode(&v2, &limits),
            Err(SnapshotError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            SeedSnapshot::decode(&long, &limits),
            Err(SnapshotError::TrailingBytes { len: 1 })
        );
        let tight = Limits {
            max_peers: 1,
            ..limits
        };
        assert!(matches!(
            SeedSnapshot::decode(&bytes, &tight),
            Err(SnapshotError::Decode(DecodeError::FieldTooLarge { .. }))
        ));
        let mut dup = sample();
        dup.members[1].id = 0;
        assert_eq!(
            SeedSnapshot::decode(&dup.encode(), &limits),
            Err(SnapshotError::Incoherent("a member id appears twice"))
        );
        let mut reused = sample();
        reused.next_member = 3;
        assert!(matches!(
            SeedSnapshot::decode(&reused.encode(), &limits),
            Err(SnapshotError::Incoherent(_))
        ));
    }

    #[test]
    fn a_huge_member_count_allocates_nothing() {
        let mut bytes = sample().encode().to_vec();
        // The count sits right before the first member (51 + 63 bytes from the end).
        let at = bytes.len() - 114 - 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SeedSnapshot::decode(&bytes, &Limits::DEFAULT),
            Err(SnapshotError::Decode(DecodeError::FieldTooLarge { .. }))
        ));
    }

    fn arb_snapshot() -> impl Strategy<Value = SeedSnapshot> {
        let member = (any::<u32>(), arb_addr(), any::<u64>(), any::<[u8; 32]>());
        (
            (any::<[u8; 32]>(), any::<u64>(), any::<u64>(), arb_addr()),
            (any::<[u8; 32]>(), 1u32..8, any::<u32>(), any::<bool>()),
            (1u64..u64::MAX, vec(member, 0..6)),
        )
            .prop_map(
                |((rng_seed, unix_time, incarnation, addr), (secret, ws, pending, formed), m)| {
                    let (epoch, members) = m;
                    // Make it coherent: unique ids below next_member, limits that fit.
                    let mut members: Vec<SnapshotMember> = if formed {
                        members
                            .into_iter()
                            .enumerate()
                            .map(|(i, (id, addr, incarnation, key_sha256))| SnapshotMember {
                                id: (id % 1000) * 8 + i as u32,
                                addr,
                                incarnation,
                                key_sha256,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    members.dedup_by_key(|m| m.id);
                    let next_member = members.iter().map(|m| m.id + 1).max().unwrap_or(0);
                    SeedSnapshot {
                        rng_seed,
                        unix_time,
                        incarnation,
                        addr,
                        secret,
                        world_size: ws,
                        max_world_size: ws.max(members.len() as u32) + 2,
                        max_pending_joins: pending,
                        formed,
                        epoch: if formed { epoch } else { 1 },
                        next_member,
                        members,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_coherent_snapshot_round_trips(s in arb_snapshot()) {
            let bytes = s.encode();
            prop_assert_eq!(SeedSnapshot::decode(&bytes, &Limits::DEFAULT), Ok(s.clone()));
            prop_assert_eq!(SeedSnapshot::decode(&bytes, &Limits::DEFAULT).unwrap().encode(), bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..300)) {
            let mut input = b"NXSS\x01".to_vec();
            input.extend(data);
            let _ = SeedSnapshot::decode(&input, &Limits::DEFAULT);
        }
    }
}
