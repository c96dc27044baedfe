//! A seed that survives its own crash: its snapshot out, and a node built back from one.
//!
//! The core only produces and consumes bytes; the driver decides where they live (the
//! CLI's `--state-file`) and writes them on every `Event::SeedStateChanged`.

use std::time::Instant;

use bytes::Bytes;

use super::{Node, Role};
use crate::codec::SeedSnapshot;
use crate::config::{NodeConfig, SeedConfig};
use crate::error::ConfigError;
use crate::event::Event;
use crate::transport::{ConnId, LostReason};

impl Node {
    /// Seed: the encoded [`SeedSnapshot`] of its state now (`None` on a worker). It holds
    /// the secret and what the CA key derives from: store it readable by its owner only.
    pub fn seed_snapshot(&self) -> Option<Bytes> {
        match &self.role {
            Role::Seed { state, .. } => state.snapshot().map(|s| s.encode()),
            Role::Worker(_) => None,
        }
    }

    /// A seed restarted from `snapshot`: the same identity, CA, cluster id, secret and
    /// ticket, at the persisted epoch with every member known and none connected yet.
    ///
    /// `config` gives timings, limits and policies; its `rng_seed`, `unix_time`,
    /// `listen_addr` and `incarnation` are replaced by the snapshot's (the incarnation by
    /// the next one, and `Event::SeedStateChanged` asks for it to be written, so no two
    /// lives share randomness). Write [`seed_snapshot`](Self::seed_snapshot) durably
    /// before feeding the node its first datagram: a seed that served and crashed again
    /// before the write would come back as the same incarnation a second time, drawing the
    /// same randomness. Members come back by redialling; those not back
    /// within `recovery_timeout + heartbeat_timeout` are then treated as silent (voted
    /// dead by the seed itself under the automatic policy). Bind the socket to
    /// [`SeedSnapshot::addr`] before feeding datagrams.
    pub fn seed_restore(
        config: NodeConfig,
        snapshot: &[u8],
        now: Instant,
    ) -> Result<Node, ConfigError> {
        let snap = SeedSnapshot::decode(snapshot, &config.limits)?;
        let mut config = config;
        config.rng_seed = snap.rng_seed;
        config.unix_time = snap.unix_time;
        config.listen_addr = snap.addr;
        config.incarnation = snap.incarnation.saturating_add(1);
        let mut seed = SeedConfig::new(snap.world_size, snap.secret);
        seed.max_world_size = snap.max_world_size;
        seed.max_pending_joins = snap.max_pending_joins as usize;
        let mut node = Node::seed(config, seed, now)?;
        if let Role::Seed { state, .. } = &mut node.role {
            state.restore_formed(now, &snap);
        }
        let epoch = node.epoch();
        node.events.push_back(Event::SeedStateChanged { epoch });
        Ok(node)
    }

    /// Worker: the seed connection `conn` went silent past `heartbeat_timeout`: close it
    /// and dial the seed again (with backoff), rather than wait for QUIC's idle timeout.
    pub(super) fn seed_silent(&mut self, now: Instant, conn: ConnId) {
        let Role::Worker(w) = &mut self.role else {
            return;
        };
        if w.seed_conn() != Some(conn) || !w.is_ready() {
            return;
        }
        let (_, actions) = w.on_lost(now, conn, &LostReason::ClosedLocally);
        self.transport.close(
            now,
            conn,
            crate::membership::CLOSE_REDIAL,
            Bytes::from_static(b"seed silent"),
        );
        self.apply(now, actions);
    }
}
