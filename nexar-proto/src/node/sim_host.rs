//! A `Node` is a simulator host: the simulator drives it exactly as a driver would.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

use super::Node;
use crate::sim::SimHost;
use crate::Transmit;

impl SimHost for Node {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, ecn: Option<u8>, data: &[u8]) {
        Node::handle_datagram(self, now, from, ecn, BytesMut::from(data));
    }

    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        Node::poll_transmit(self, now, buf)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
}

impl Node {
    /// Test hook (feature `sim`): a worker puts `msg` on its control stream to the seed as
    /// it is, whatever its state, so that tests can play a member that lies (a forged
    /// recovery vote, a wrong epoch). Returns whether it was queued.
    #[doc(hidden)]
    pub fn send_to_seed(&mut self, msg: &crate::codec::Message) -> bool {
        let super::Role::Worker(w) = &self.role else {
            return false;
        };
        let Some(conn) = w.seed_conn() else {
            return false;
        };
        self.transport
            .send(conn, crate::transport::StreamClass::Control, msg.to_frame())
            .is_ok()
    }

    /// Test hook (feature `sim`): one line on where this node's membership stands (its
    /// epoch, recovery state, checkpoint, and at the seed the coordinator's round and
    /// requests), for a failing simulation's report.
    #[doc(hidden)]
    pub fn describe(&self) -> String {
        match &self.role {
            super::Role::Seed { state, .. } => state.describe(),
            super::Role::Worker(_) => format!(
                "worker {:?}: {:?}, checkpoint {:?}, held {}, in flight {}",
                self.membership_now(),
                self.motion.state,
                self.motion.checkpoint,
                self.motion.held.len(),
                self.exec.as_ref().map_or(0, |e| e.in_flight()),
            ),
        }
    }
}
