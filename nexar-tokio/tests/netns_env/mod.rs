//! The environment the netns test runs in (not a test target itself, and used by
//! `netns.rs` only): what it needs of the host, the namespaces and bridge it creates, and
//! the node processes it runs there. Each is a guard that undoes its part on drop, on
//! failure and panic too, so the test itself reads as the scenario and its checks.

pub mod host;
pub mod net;
pub mod procs;
