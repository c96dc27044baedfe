//! Compressed all-reduce for slow links: sparsification with error feedback.
//!
//! Each step a rank sends only some of its gradient's elements, chosen by a
//! [`Compressor`]; what it did not send stays on the rank as a residual ([`ErrorFeedback`])
//! and is added to the next step's input, so nothing is lost, only delayed (the sum of what
//! was sent over all steps plus the final residual is the sum of the inputs). The pieces
//! here are pure, so the drivers and the simulator run the same math:
//!
//! - [`TopK`]: the `k` largest elements by magnitude, ties broken by the lower index, so the
//!   choice is a function of the values alone. Ranks choose different indices, so they
//!   exchange (index, value) pairs with an all-gather and every rank sums them in rank
//!   order ([`sparse::sum_pairs`]): the same bytes in, the same order, hence bit-identical
//!   results on every rank.
//! - [`RandomK`]: `k` indices drawn from a generator seeded by (seed, step), which every
//!   rank agrees on, so every rank picks the same indices and a dense all-reduce of the `k`
//!   values does the job.
//! - [`NoCompression`]: everything, as a plain all-reduce.
//!
//! The result on every rank is the sum over ranks of what each sent (zero where nobody
//! sent anything); the reduction is always a sum.

mod feedback;
mod magnitude;
mod select;
pub mod sparse;

pub use feedback::{ErrorFeedback, Payload};
pub use magnitude::Magnitude;
pub use select::{k_for, random_k_indices, top_k_indices, NoCompression, RandomK, TopK};

/// Which elements a rank sends this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every element (a dense all-reduce).
    All,
    /// These indices, strictly increasing, *the same on every rank* (the compressor
    /// promises it, e.g. from a generator every rank seeds alike): a dense all-reduce of
    /// the selected values. Indices that differ between ranks of equal count are not
    /// detected and sum unrelated elements.
    Shared(Vec<u32>),
    /// These indices, strictly increasing, chosen by each rank alone (the same count on
    /// every rank): an all-gather of (index, value) pairs.
    PerRank(Vec<u32>),
}

/// Chooses what to send. Implement it for a compressor of your own; nexar applies the
/// error feedback, checks the selection and moves the data.
pub trait Compressor {
    /// Pick the elements of `values` (this step's input plus the residual) to send at
    /// `step` (0, 1, ... per [`ErrorFeedback`]; the same on every rank).
    fn select<T: Magnitude>(&mut self, step: u64, values: &[T]) -> Selection;
}

/// What can go wrong in the compression math (the collectives' own errors are separate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// A density outside (0, 1].
    #[error("density {0} is not in (0, 1]")]
    Density(String),
    /// More elements than a `u32` index can name.
    #[error("{len} elements exceed the largest compressible tensor ({max})")]
    TooLong {
        /// Elements given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input's length differs from the one the residual was made for.
    #[error("input has {got} elements, the residual {expected}")]
    LengthChanged {
        /// The residual's length.
        expected: usize,
        /// The input's.
        got: usize,
    },
    /// A selection that is not strictly increasing or names an element past the end.
    #[error("selection invalid at position {position}: index {index} (length {len})")]
    BadSelection {
        /// Position in the selection.
        position: usize,
        /// The index found there.
        index: u32,
        /// The tensor's length.
        len: usize,
    },
    /// Gathered pairs whose size is not what every rank sending `k` pairs gives, or an
    /// index past the end: a rank sent something else.
    #[error("gathered sparse data from rank {rank} is malformed: {detail}")]
    BadPairs {
        /// The rank whose block is bad.
        rank: u32,
        /// What is wrong.
        detail: &'static str,
    },
}
