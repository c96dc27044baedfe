//! Who is in the cluster: the seed's joiners and rank assignment, the worker's join and
//! mesh, and the join proof both sides compute.
//!
//! These are pure state machines: they take transport events (values) and return
//! [`Action`]s (values) that the `Node` applies to the transport, so they can be reasoned
//! about, and tested, without QUIC.

pub(crate) mod coordinator;
mod elastic;
pub(crate) mod liveness;
mod mesh;
pub(crate) mod proof;
mod restart;
mod round;
pub(crate) mod seed;
mod seed_silence;
pub(crate) mod view;
pub(crate) mod worker;

pub(crate) use restart::Origin;

use bytes::Bytes;

use crate::codec::{Message, RejectReason};
use crate::event::Event;
use crate::transport::ConnId;

/// Application close codes at or above this carry a join rejection: code − base is the
/// `RejectReason` code, and the close's reason bytes hold the encoded `JoinRejected` frame.
pub(crate) const CLOSE_REJECT_BASE: u64 = 0x100;

/// Application close code of a member that left at a checkpoint: its peers take the
/// loss as the departure the agreement announced, not as a failure.
pub(crate) const CLOSE_LEFT: u64 = 0x5;

/// Application close code of a rank that aborted (the abort policy) because another rank
/// was lost; the reason bytes hold that rank (u32, little-endian). Its peers abort too,
/// naming the same rank.
pub(crate) const CLOSE_ABORTED: u64 = 0x8;

/// Application close code of a member closing its seed connection because it stopped
/// hearing the seed: it is dialling again, so the seed waits for it before suspecting it.
pub(crate) const CLOSE_REDIAL: u64 = 0x9;

/// What a membership state machine asks the node to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send a control message on this connection.
    Send { conn: ConnId, msg: Message },
    /// Close the connection, telling the peer why (a rejection) in the close frame itself,
    /// which QUIC retransmits, so the reason survives loss without lingering.
    Close {
        conn: ConnId,
        code: u64,
        reason: Bytes,
    },
    /// Surface an event to the application.
    Event(Event),
    /// Worker: welcomed; start accepting mesh connections (CA-chained client certs).
    Listen,
    /// Worker: dial `rank` at `addr` for the mesh (`attempt` counts retries).
    Dial {
        rank: u32,
        addr: std::net::SocketAddr,
        attempt: u32,
    },
    /// Worker: dial the seed at `addr` again, pinning `pin` (the last attempt failed for
    /// a reason that may pass: a lossy handshake, a join deadline, a refusal).
    DialSeed {
        addr: std::net::SocketAddr,
        pin: [u8; 32],
    },
    /// Worker: the seed connection is back after the Welcome (the seed restarted, or the
    /// link broke): what the seed may have missed (a recovery vote, a checkpoint request)
    /// goes again.
    SeedReattached,
}

/// The close that carries a rejection.
pub(crate) fn reject(conn: ConnId, reason: RejectReason, detail: u64) -> Action {
    let msg = Message::JoinRejected(crate::codec::JoinRejected { reason, detail });
    Action::Close {
        conn,
        code: CLOSE_REJECT_BASE + u64::from(reason as u8),
        reason: msg.to_frame(),
    }
}
