//! Proptest strategies generating arbitrary messages of every kind.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};

use super::*;

/// IPv6 flow info and scope id are zero: they are not sent (see PROTOCOL.md).
pub(crate) fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0
        ))),
    ]
}

pub(crate) fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn ranks() -> impl Strategy<Value = Vec<u32>> {
    vec(any::<u32>(), 0..8)
}

fn hello() -> impl Strategy<Value = Message> {
    (
        any::<u16>(),
        any::<[u8; 32]>(),
        arb_bytes(64),
        arb_addr(),
        any::<Option<u32>>(),
        any::<u64>(),
    )
        .prop_map(
            |(version, join_proof, csr_der, listen_addr, requested_rank, incarnation)| {
                Message::Hello(Hello {
                    version,
                    join_proof,
                    csr_der,
                    listen_addr,
                    requested_rank,
                    incarnation,
                })
            },
        )
}

fn welcome() -> impl Strategy<Value = Message> {
    let peer = (any::<(u32, u32)>(), arb_addr(), any::<u64>()).prop_map(
        |((rank, member), addr, incarnation)| PeerEntry {
            rank,
            member,
            addr,
            incarnation,
        },
    );
    (
        any::<(u32, u32, u64)>(),
        any::<[u8; 16]>(),
        vec(peer, 0..6),
        arb_bytes(64),
        arb_bytes(64),
    )
        .prop_map(
            |((rank, world_size, epoch), cluster_id, peers, ca_cert_der, node_cert_der)| {
                Message::Welcome(Welcome {
                    rank,
                    world_size,
                    epoch,
                    cluster_id,
                    peers,
                    ca_cert_der,
                    node_cert_der,
                })
            },
        )
}

fn join_rejected() -> impl Strategy<Value = Message> {
    (select(RejectReason::ALL), any::<u64>())
        .prop_map(|(reason, detail)| Message::JoinRejected(JoinRejected { reason, detail }))
}

fn small_membership() -> BoxedStrategy<Message> {
    Union::new([
        any::<(u64, u64)>()
            .prop_map(|(epoch, seq)| Message::Heartbeat(Heartbeat { epoch, seq }))
            .boxed(),
        any::<(u64, u32)>()
            .prop_map(|(epoch, rank)| Message::Leave(Leave { epoch, rank }))
            .boxed(),
        any::<(u64, u32, u64)>()
            .prop_map(|(epoch, rank, checkpoint)| {
                Message::CheckpointRequest(CheckpointRequest {
                    epoch,
                    rank,
                    checkpoint,
                })
            })
            .boxed(),
        (any::<(u64, u32)>(), ranks())
            .prop_map(|((epoch, voter), dead)| {
                Message::RecoveryVote(RecoveryVote { epoch, voter, dead })
            })
            .boxed(),
        (any::<(u64, u64)>(), ranks())
            .prop_map(|((old_epoch, new_epoch), dead)| {
                Message::RecoveryAgreed(RecoveryAgreed {
                    old_epoch,
                    new_epoch,
                    dead,
                })
            })
            .boxed(),
    ])
    .boxed()
}

fn checkpoint_agreed() -> impl Strategy<Value = Message> {
    let member = (
        any::<Option<u32>>(),
        any::<(u32, u32)>(),
        arb_addr(),
        any::<u64>(),
    )
        .prop_map(
            |(old_rank, (new_rank, member), addr, incarnation)| MemberEntry {
                old_rank,
                new_rank,
                member,
                addr,
                incarnation,
            },
        );
    (any::<(u64, u64, u32)>(), vec(member, 0..6), ranks()).prop_map(
        |((old_epoch, new_epoch, new_world_size), members, leavers)| {
            Message::CheckpointAgreed(CheckpointAgreed {
                old_epoch,
                new_epoch,
                new_world_size,
                members,
                leavers,
            })
        },
    )
}

fn chunk() -> impl Strategy<Value = Message> {
    let header = (
        any::<(u64, u64, u64)>(),
        select(Algorithm::ALL),
        any::<(u32, u64)>(),
    )
        .prop_map(
            |((epoch, comm, seq), algorithm, (step, offset))| ChunkHeader {
                epoch,
                comm,
                seq,
                algorithm,
                step,
                offset,
            },
        );
    let fingerprint = (
        select(CollectiveKind::ALL),
        select(DType::ALL),
        select(ReduceOp::ALL),
        any::<(u64, u32)>(),
        select(Algorithm::ALL),
    )
        .prop_map(|(kind, dtype, op, (count, root), algorithm)| Fingerprint {
            kind,
            dtype,
            op,
            count,
            root,
            algorithm,
        });
    (header, proptest::option::of(fingerprint), arb_bytes(256)).prop_map(
        |(header, fingerprint, payload)| {
            Message::Chunk(Chunk {
                header,
                fingerprint,
                payload: payload.into(),
            })
        },
    )
}

fn p2p() -> BoxedStrategy<Message> {
    Union::new([
        (any::<(u64, u64, u64, u64)>(), arb_bytes(256))
            .prop_map(|((epoch, comm, tag, seq), payload)| {
                Message::Tagged(Tagged {
                    epoch,
                    comm,
                    tag,
                    seq,
                    payload,
                })
            })
            .boxed(),
        (any::<(u64, u32)>(), arb_bytes(64))
            .prop_map(|((id, fn_id), payload)| {
                Message::RpcRequest(RpcRequest { id, fn_id, payload })
            })
            .boxed(),
        (any::<u64>(), select(RpcStatus::ALL), arb_bytes(64))
            .prop_map(|(id, status, payload)| {
                Message::RpcResponse(RpcResponse {
                    id,
                    status,
                    payload,
                })
            })
            .boxed(),
        (any::<(u32, u32)>(), arb_bytes(64))
            .prop_map(|((from, to), inner)| Message::Relay(Relay { from, to, inner }))
            .boxed(),
        any::<(u64, u64, u64, u64, u64)>()
            .prop_map(|(epoch, comm, tag, seq, total)| {
                Message::TaggedStart(TaggedStart {
                    epoch,
                    comm,
                    tag,
                    seq,
                    total,
                })
            })
            .boxed(),
        (any::<(u64, u64, u64, u64, u64)>(), arb_bytes(256))
            .prop_map(|((epoch, comm, tag, seq, offset), payload)| {
                Message::TaggedPart(TaggedPart {
                    epoch,
                    comm,
                    tag,
                    seq,
                    offset,
                    payload,
                })
            })
            .boxed(),
    ])
    .boxed()
}

/// Any message; every kind is reachable (five groups, chosen uniformly).
pub(crate) fn arb_message() -> BoxedStrategy<Message> {
    Union::new([
        prop_oneof![hello(), welcome(), join_rejected()].boxed(),
        small_membership(),
        checkpoint_agreed().boxed(),
        chunk().boxed(),
        p2p(),
    ])
    .boxed()
}
