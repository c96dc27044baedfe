//! One scenario suite, three backends: the simulator, the tokio driver and the smol
//! driver (both over real UDP on loopback).
//!
//! A [`Backend`] is a formed cluster driven synchronously, one call per round: every live
//! rank takes part in each call, concurrently. The scenarios ([`formation`],
//! [`every_collective`], [`send_recv`], [`silent_rank`]) are written once against it;
//! `tests/tests/scenarios.rs` runs each on each backend.

mod drivers;
mod scenarios;
mod sim;

use std::time::Duration;

use nexar_proto::OpError;

use crate::collectives::Case;

pub use drivers::{Exec, Smol, SmolExec, Task, Tokio, TokioExec};
pub use scenarios::{all_cases, every_collective, formation, send_recv, silent_rank};
pub use sim::Sim;

/// World size of every scenario.
pub const RANKS: u32 = 4;

/// Short failure-detection timeouts, for the silent-rank scenario.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A peer silent this long is gone.
    pub idle: Duration,
    /// Every collective fails with `OpError::Timeout` past this.
    pub collective: Duration,
}

/// Why one rank's part of a round failed.
#[derive(Debug)]
pub enum Failure {
    /// The typed error of a started operation (a lost peer, a timeout, ...).
    Op(OpError),
    /// Anything else (refused command, wrong output shape, ...).
    Other(String),
}

/// One rank's part of a point-to-point round: send `data` to `to` on `tag`, then receive
/// from `from` on the same tag.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Destination rank.
    pub to: u32,
    /// Source rank of the message to receive.
    pub from: u32,
    /// Tag of both messages.
    pub tag: u64,
    /// Payload sent.
    pub data: Vec<u8>,
}

/// A formed cluster of [`RANKS`] ranks, driven one synchronous round at a time.
pub trait Backend: Sized {
    /// Name, for messages.
    const NAME: &'static str;
    /// Form a cluster of `n` ranks (default timeouts unless `timeouts` is given).
    fn form(n: u32, timeouts: Option<Timeouts>) -> Result<Self, String>;
    /// (rank, world size) of each live rank, in rank order.
    fn ranks(&self) -> Vec<(u32, u32)>;
    /// Run `case` (i32 data) on every live rank; each rank's output (as
    /// [`Case::expected_output`] shapes it), in rank order, and the time the round took.
    fn collective(&mut self, case: &Case) -> (Vec<Result<Vec<i64>, Failure>>, Duration);
    /// Run one point-to-point round (`plan[r]` for rank r); what each rank received.
    fn exchange(&mut self, plan: &[Exchange]) -> Vec<Result<Vec<u8>, Failure>>;
    /// Make `rank` stop answering at once, like a crash.
    fn silence(&mut self, rank: u32);
}
