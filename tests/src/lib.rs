//! Shared helpers for the workspace-level integration tests.

pub mod collectives;
#[path = "../common/mod.rs"]
pub mod common;
pub mod hostile_net;
pub mod motion;
pub mod rogue;
pub mod support;
pub mod swarm;
pub mod training;
