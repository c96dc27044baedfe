//! Error feedback: what a step did not send is added to the next step's input.

use super::{CompressError, Compressor, Magnitude, Selection};
use crate::codec::ReduceOp;

/// What one rank contributes to a compressed all-reduce step.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<T> {
    /// Every element: all-reduce them.
    Dense(Vec<T>),
    /// The same indices on every rank: all-reduce `values`, then place them with
    /// [`sparse::scatter`](super::sparse::scatter).
    Shared {
        /// Selected indices, ascending.
        indices: Vec<u32>,
        /// Their values.
        values: Vec<T>,
    },
    /// Indices of this rank's own choosing: all-gather
    /// [`sparse::encode_pairs`](super::sparse::encode_pairs) and sum them with
    /// [`sparse::sum_pairs`](super::sparse::sum_pairs).
    PerRank {
        /// Selected indices, ascending.
        indices: Vec<u32>,
        /// Their values.
        values: Vec<T>,
    },
}

/// One tensor's error-feedback state on one rank: the residual (never sent anywhere) and
/// the step counter the compressor sees. Keep one per tensor, across training steps.
///
/// A step is [`prepare`](Self::prepare) then, once the collective succeeded,
/// [`commit`](Self::commit). A step whose collective failed is not committed: the residual
/// and step stay as they were, as if the step had not been tried.
#[derive(Debug, Clone, Default)]
pub struct ErrorFeedback<T> {
    residual: Vec<T>,
    step: u64,
    next: Option<Vec<T>>,
}

/// The largest tensor a selection can index.
const MAX_LEN: usize = u32::MAX as usize;

impl<T: Magnitude> ErrorFeedback<T> {
    /// Fresh state: no residual yet (it takes the first input's length), step 0.
    pub fn new() -> Self {
        Self {
            residual: Vec::new(),
            step: 0,
            next: None,
        }
    }

    /// What has not been sent yet (empty before the first step).
    pub fn residual(&self) -> &[T] {
        &self.residual
    }

    /// The number of committed steps.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Add the residual to `input`, let `compressor` choose, and return what to send.
    /// The new residual (the sum, with what is sent set to zero) waits for
    /// [`commit`](Self::commit).
    pub fn prepare<C: Compressor>(
        &mut self,
        compressor: &mut C,
        input: &[T],
    ) -> Result<Payload<T>, CompressError> {
        let n = input.len();
        if n > MAX_LEN {
            return Err(CompressError::TooLong {
                len: n,
                max: MAX_LEN,
            });
        }
        if self.step == 0 && self.residual.is_empty() {
            self.residual = vec![T::identity(ReduceOp::Sum); n];
        }
        if self.residual.len() != n {
            return Err(CompressError::LengthChanged {
                expected: self.residual.len(),
                got: n,
            });
        }
        let mut sum: Vec<T> = input.to_vec();
        T::reduce_into(&mut sum, &self.residual, ReduceOp::Sum);
        let zero = T::identity(ReduceOp::Sum);
        let payload = match compressor.select(self.step, &sum) {
            Selection::All => {
                self.next = Some(vec![zero; n]);
                return Ok(Payload::Dense(sum));
            }
            Selection::Shared(indices) => {
                let values = take(&mut sum, &indices, zero)?;
                Payload::Shared { indices, values }
            }
            Selection::PerRank(indices) => {
                let values = take(&mut sum, &indices, zero)?;
                Payload::PerRank { indices, values }
            }
        };
        self.next = Some(sum);
        Ok(payload)
    }

    /// The step's collective succeeded: keep the new residual and advance the step.
    /// Without a prepared step this does nothing.
    pub fn commit(&mut self) {
        if let Some(next) = self.next.take() {
            self.residual = next;
            self.step += 1;
        }
    }
}

/// Move the selected elements out of `sum` (leaving `zero`), after checking the
/// selection is strictly increasing and in range.
fn take<T: Copy>(sum: &mut [T], indices: &[u32], zero: T) -> Result<Vec<T>, CompressError> {
    let mut prev: Option<u32> = None;
    let mut out = Vec::with_capacity(indices.len());
    for (position, &index) in indices.iter().enumerate() {
        if prev.is_some_and(|p| index <= p) || index as usize >= sum.len() {
            return Err(CompressError::BadSelection {
                position,
                index,
                len: sum.len(),
            });
        }
        prev = Some(index);
        out.push(std::mem::replace(&mut sum[index as usize], zero));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{NoCompression, RandomK, TopK};
    use super::*;
    use proptest::prelude::*;

    struct Fixed(Selection);
    impl Compressor for Fixed {
        fn select<T: Magnitude>(&mut self, _: u64, _: &[T]) -> Selection {
            self.0.clone()
        }
    }

    fn sent(p: &Payload<i64>, n: usize) -> Vec<i64> {
        let mut out = vec![0; n];
        match p {
            Payload::Dense(v) => out.copy_from_slice(v),
            Payload::Shared { indices, values } | Payload::PerRank { indices, values } => {
                for (&i, &v) in indices.iter().zip(values) {
                    out[i as usize] = v;
                }
            }
        }
        out
    }

    /// Run `steps` steps of `c` on `inputs(step)`; return (sum of what was sent, final
    /// residual).
    fn run<C: Compressor>(c: &mut C, n: usize, steps: &[Vec<i64>]) -> (Vec<i64>, Vec<i64>) {
        let mut ef = ErrorFeedback::new();
        let mut total = vec![0i64; n];
        for input in steps {
            let p = ef.prepare(c, input).unwrap();
            for (t, s) in total.iter_mut().zip(sent(&p, n)) {
                *t += s;
            }
            ef.commit();
        }
        (total, ef.residual().to_vec())
    }

    proptest! {
        /// Over any number of steps: everything sent plus the final residual is exactly
        /// the sum of the inputs (integers, so exact), for each built-in compressor.
        #[test]
        fn error_feedback_conserves_the_sum(
            n in 1usize..64,
            steps in prop::collection::vec(prop::collection::vec(-1000i64..1000, 64), 1..8),
            density in 0.01f64..1.0,
            seed in any::<u64>(),
        ) {
            let steps: Vec<Vec<i64>> = steps.into_iter().map(|s| s[..n].to_vec()).collect();
            let mut expect = vec![0i64; n];
            for s in &steps {
                for (e, x) in expect.iter_mut().zip(s) {
                    *e += x;
                }
            }
            let check = |(total, residual): (Vec<i64>, Vec<i64>)| {
                let got: Vec<i64> = total.iter().zip(&residual).map(|(a, b)| a + b).collect();
                got == expect
            };
            prop_assert!(check(run(&mut TopK::new(density).unwrap(), n, &steps)));
            prop_assert!(check(run(&mut RandomK::new(density, seed).unwrap(), n, &steps)));
            let (total, residual) = run(&mut NoCompression, n, &steps);
            prop_assert!(residual.iter().all(|&r| r == 0));
            prop_assert_eq!(total, expect);
        }
    }

    #[test]
    fn residual_is_added_to_the_next_input() {
        let mut ef = ErrorFeedback::new();
        let mut c = Fixed(Selection::PerRank(vec![1]));
        let p = ef.prepare(&mut c, &[5i64, 7, 1]).unwrap();
        assert_eq!(
            p,
            Payload::PerRank {
                indices: vec![1],
                values: vec![7]
            }
        );
        assert_eq!(ef.residual(), &[0, 0, 0]); // not committed yet
        ef.commit();
        assert_eq!((ef.residual(), ef.step()), (&[5i64, 0, 1][..], 1));
        c.0 = Selection::Shared(vec![0, 2]);
        let p = ef.prepare(&mut c, &[1i64, 1, 1]).unwrap();
        assert_eq!(
            p,
            Payload::Shared {
                indices: vec![0, 2],
                values: vec![6, 2]
            }
        );
        // Not committed (the collective failed): the state is as before the attempt.
        assert_eq!((ef.residual(), ef.step()), (&[5i64, 0, 1][..], 1));
    }

    #[test]
    fn bad_selections_and_lengths_are_refused() {
        let mut ef = ErrorFeedback::<f32>::new();
        for (sel, position, index) in [
            (vec![0, 3], 1, 3), // one past the end
            (vec![1, 1], 1, 1), // repeated
            (vec![2, 0], 1, 0), // decreasing
        ] {
            let err = ef.prepare(&mut Fixed(Selection::PerRank(sel)), &[1.0; 3]);
            assert_eq!(
                err,
                Err(CompressError::BadSelection {
                    position,
                    index,
                    len: 3
                })
            );
        }
        assert!(ef
            .prepare(&mut Fixed(Selection::Shared(vec![2])), &[1.0; 3])
            .is_ok());
        ef.commit();
        let err = ef.prepare(&mut NoCompression, &[1.0; 4]);
        assert_eq!(
            err,
            Err(CompressError::LengthChanged {
                expected: 3,
                got: 4
            })
        );
    }
}
