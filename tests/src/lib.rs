//! Shared helpers for the workspace-level integration tests.

pub mod collectives;
pub mod rogue;
pub mod support;
