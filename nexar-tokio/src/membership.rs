//! Membership in motion through the user API: the world as it changes (a recovery or a
//! checkpoint renumbers the ranks), the events that tell the application about it, and
//! `checkpoint`, `leave` and `recover`.
//!
//! Shared by both drivers through `#[path]`, like `api/`: no runtime types here.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_channel::mpsc;
use futures_core::Stream;
use nexar_proto::{Command, Event, Outcome};

use crate::api::{Client, NexarError};

/// This node's place in the world, kept current by its driver as epochs change.
#[derive(Debug)]
pub(crate) struct WorldView {
    rank: AtomicU32,
    size: AtomicU32,
    epoch: AtomicU64,
}

impl WorldView {
    pub(crate) fn new(rank: u32, size: u32, epoch: u64) -> Arc<Self> {
        Arc::new(Self {
            rank: AtomicU32::new(rank),
            size: AtomicU32::new(size),
            epoch: AtomicU64::new(epoch),
        })
    }

    pub(crate) fn set(&self, rank: u32, size: u32, epoch: u64) {
        // Readers may see a mix for an instant; each value is one the node had.
        self.rank.store(rank, Ordering::Release);
        self.size.store(size, Ordering::Release);
        self.epoch.store(epoch, Ordering::Release);
    }

    pub(crate) fn rank(&self) -> u32 {
        self.rank.load(Ordering::Acquire)
    }

    pub(crate) fn size(&self) -> u32 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}

/// Where a node's driver sends membership events, and where the client takes them from.
pub(crate) fn channel() -> (
    mpsc::UnboundedSender<Event>,
    Arc<Mutex<Option<MembershipEvents>>>,
) {
    let (tx, rx) = mpsc::unbounded();
    (tx, Arc::new(Mutex::new(Some(MembershipEvents { rx }))))
}

/// Whether the application hears about this event: `PeerDown`, `EpochChanged`,
/// `Evicted` and `RecoveryFailed`.
pub(crate) fn is_membership(event: &Event) -> bool {
    matches!(
        event,
        Event::PeerDown { .. }
            | Event::EpochChanged { .. }
            | Event::Evicted { .. }
            | Event::RecoveryFailed { .. }
    )
}

/// Membership events of one node, in order: `PeerDown`, `EpochChanged`, `Evicted`,
/// `RecoveryFailed` (see [`nexar_proto::Event`]). Under the manual recovery policy this
/// is how the application learns that it has a decision to make.
#[derive(Debug)]
pub struct MembershipEvents {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl MembershipEvents {
    /// The next event; `None` once the node's driver has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        poll_fn(|cx| Pin::new(&mut self.rx).poll_next(cx)).await
    }
}

/// The membership after a checkpoint, a leave or a recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    /// The epoch.
    pub epoch: u64,
    /// Our rank in it (`None` after a leave).
    pub rank: Option<u32>,
    /// Its size.
    pub world_size: u32,
}

fn membership(outcome: Outcome) -> Result<Membership, NexarError> {
    match outcome {
        Outcome::Checkpoint {
            epoch,
            rank,
            world_size,
        } => Ok(Membership {
            epoch,
            rank,
            world_size,
        }),
        other => Err(NexarError::Internal(format!(
            "expected a checkpoint outcome, got {other:?}"
        ))),
    }
}

impl Client {
    /// The membership epoch this rank is in now.
    pub fn epoch(&self) -> u64 {
        self.view().epoch()
    }

    /// The node's membership events; the first call takes them (later calls get `None`).
    pub fn membership_events(&self) -> Option<MembershipEvents> {
        self.events_slot().lock().ok()?.take()
    }

    /// Every rank calls this at the same point: joiners waiting at the seed and leaves
    /// take effect in one agreed epoch change. It waits for this rank's collectives in
    /// flight; commands issued after it run on the new world. Returns once the new mesh
    /// is up.
    pub async fn checkpoint(&self) -> Result<Membership, NexarError> {
        self.command_outcome(Command::Checkpoint)
            .await
            .and_then(membership)
    }

    /// Leave at the next checkpoint (the others call [`checkpoint`](Self::checkpoint)),
    /// without tripping anyone's failure detection. The node does nothing more after.
    pub async fn leave(&self) -> Result<Membership, NexarError> {
        self.command_outcome(Command::Leave)
            .await
            .and_then(membership)
    }

    /// Under the manual recovery policy, after a `PeerDown`: agree with the survivors on
    /// the dead set and move to the next epoch (as the automatic policy does by itself).
    pub async fn recover(&self) -> Result<Membership, NexarError> {
        self.command_outcome(Command::Recover)
            .await
            .and_then(membership)
    }
}
