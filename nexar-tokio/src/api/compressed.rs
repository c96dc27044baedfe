//! Compressed all-reduce: sparsification with error feedback, for slow links.

use super::communicator::check_len;
use super::*;
use nexar_proto::compress::{sparse, Compressor, ErrorFeedback, Magnitude, Payload};

impl Communicator {
    /// Sum `data` across ranks, sending only what `compressor` selects; the rest is kept in
    /// `feedback` (on this rank only) and added to the next call's input. Every rank ends
    /// with the same bits: the sum of what every rank sent (zero where nobody sent).
    ///
    /// Keep one [`ErrorFeedback`] per tensor across steps; every rank must pass the same
    /// compressor settings and call in the same order (random-k draws from the step
    /// count, which then agrees). Top-k exchanges (index, value) pairs with an all-gather
    /// and sums them in rank order; random-k and [`NoCompression`](nexar_proto::compress::NoCompression)
    /// all-reduce the selected values. A failed call leaves `feedback` as it was.
    ///
    /// ```no_run
    /// # async fn demo(client: nexar_tokio::Client) -> Result<(), nexar_tokio::NexarError> {
    /// use nexar_tokio::compress::{ErrorFeedback, TopK};
    /// let mut top = TopK::new(0.01)?; // 1% of the elements per step
    /// let mut feedback = ErrorFeedback::new();
    /// for _step in 0..3 {
    ///     let mut grad = vec![0.5f32; 100_000];
    ///     client.all_reduce_compressed(&mut grad, &mut top, &mut feedback).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn all_reduce_compressed<T: Magnitude, C: Compressor>(
        &self,
        data: &mut [T],
        compressor: &mut C,
        feedback: &mut ErrorFeedback<T>,
    ) -> Result<(), NexarError> {
        let n = data.len();
        let out = match feedback.prepare(compressor, data)? {
            Payload::Dense(values) => self.all_reduce_start(values, ReduceOp::Sum).await?,
            Payload::Shared { indices, values } => {
                let sums = self.all_reduce_start(values, ReduceOp::Sum).await?;
                check_len("random-k output", sums.len(), indices.len())?;
                sparse::scatter(&indices, &sums, n)
            }
            Payload::PerRank { indices, values } => {
                let pairs = sparse::encode_pairs(&indices, &values);
                let gathered = self.all_gather_start(pairs).await?;
                sparse::sum_pairs::<T>(&gathered, self.size(), n)?
            }
        };
        check_len("compressed output", out.len(), n)?;
        data.copy_from_slice(&out);
        feedback.commit();
        Ok(())
    }
}
