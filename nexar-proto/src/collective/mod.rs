//! Collectives: pure plans, one executor, typed buffers and reduction kernels.
//!
//! A collective is a [`spec::CollectiveSpec`] (kind, dtype, op, count, root). Every rank
//! picks the same algorithm ([`select::select`], a pure function of world size, bytes,
//! dtype and config) and builds its own [`plan::Plan`]; the executor runs any plan,
//! checking every chunk against it before storing it, and reduces in plan order so the
//! results are bit-identical on every rank and in every run.

pub mod bucket;
pub mod buffer;
mod comm;
pub(crate) mod exec;
mod flight;
/// The real executor of every rank in memory, for benches (not a stable API).
#[doc(hidden)]
pub mod loopback;
mod outbox;
pub mod plan;
mod plan_cache;
pub mod plans;
mod running;
pub mod select;
pub mod spec;

#[cfg(test)]
mod mailbox;

pub use buffer::{Buffer, Element};
pub use comm::CommId;
pub use flight::{FlightEntry, FlightRecord, FlightState, FLIGHT_RECORD_LEN};
