//! Fusing many small tensors into few large all-reduces (gradient buckets).
//!
//! Data-parallel training reduces hundreds of gradient tensors per step; one all-reduce
//! each pays the collective's latency hundreds of times. A [`Bucketer`] groups tensors,
//! in the order they are pushed, into buckets of at most `cap_bytes` (PyTorch DDP's
//! default is 25 MiB) and reports a bucket as soon as it is full, so the driver can start
//! reducing it while the caller still produces the rest.
//!
//! The layout is a pure function of the sequence of `(dtype, len)` pushed and the cap:
//! every rank that pushes the same tensors gets the same buckets, so their all-reduces
//! pair up. A rank that pushes a different sequence gets buckets of different counts, and
//! the collective reports that as a mismatch instead of hanging. Each dtype has its own
//! open bucket (a bucket is one typed buffer), so tensors of several dtypes may be pushed
//! interleaved.

use std::collections::BTreeMap;

use crate::codec::DType;

/// Where one tensor sits: which bucket, and at which element offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index of the bucket (in the order buckets were closed).
    pub bucket: usize,
    /// First element of the tensor inside the bucket.
    pub offset: usize,
    /// Elements of the tensor.
    pub len: usize,
}

/// A closed bucket: the tensors it holds, in push order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Index of the bucket (0, 1, ... in the order buckets close).
    pub index: usize,
    /// Element type of every tensor in it.
    pub dtype: DType,
    /// The tensors (their push index) it holds, in push order.
    pub tensors: Vec<usize>,
    /// Total elements.
    pub len: usize,
}

#[derive(Debug, Default)]
struct Open {
    tensors: Vec<usize>,
    len: usize,
}

/// Assigns pushed tensors to buckets and closes each bucket as soon as it is full.
///
/// Rule, per dtype: a tensor that would take the open bucket past the cap closes it first
/// (so no bucket exceeds the cap unless a single tensor does; empty tensors ride along
/// wherever they are); a bucket that reaches the cap closes at once. A tensor larger than
/// the cap is a bucket of its own.
#[derive(Debug)]
pub struct Bucketer {
    cap_bytes: usize,
    open: BTreeMap<DType, Open>,
    slots: Vec<(DType, usize, usize)>,
    placed: Vec<Option<(usize, usize)>>,
    closed: usize,
}

impl Bucketer {
    /// A bucketer closing buckets at `cap_bytes` (at least one element's worth: a cap of 0
    /// makes every tensor its own bucket).
    pub fn new(cap_bytes: usize) -> Self {
        Self {
            cap_bytes,
            open: BTreeMap::new(),
            slots: Vec::new(),
            placed: Vec::new(),
            closed: 0,
        }
    }

    /// The cap in bytes.
    pub fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }

    /// Number of tensors pushed so far.
    pub fn tensors(&self) -> usize {
        self.slots.len()
    }

    /// Number of buckets closed so far.
    pub fn buckets_closed(&self) -> usize {
        self.closed
    }

    /// Add a tensor of `len` elements of `dtype`; returns its push index and the buckets
    /// that closed because of it (zero, one or two, in the order to start them).
    pub fn push(&mut self, dtype: DType, len: usize) -> (usize, Vec<Bucket>) {
        let index = self.slots.len();
        let bytes = len.saturating_mul(dtype.size());
        let mut closed = Vec::new();
        let open_bytes = self.open.get(&dtype).map_or(0, |o| o.len * dtype.size());
        if open_bytes > 0 && open_bytes.saturating_add(bytes) > self.cap_bytes {
            closed.extend(self.close(dtype));
        }
        let open = self.open.entry(dtype).or_default();
        let offset = open.len;
        open.tensors.push(index);
        open.len += len;
        self.slots.push((dtype, offset, len));
        self.placed.push(None);
        if open.len.saturating_mul(dtype.size()) >= self.cap_bytes {
            closed.extend(self.close(dtype));
        }
        (index, closed)
    }

    /// Close every open bucket (in dtype order) and return them; call once, after the
    /// last push.
    pub fn finish(&mut self) -> Vec<Bucket> {
        let dtypes: Vec<DType> = self.open.keys().copied().collect();
        dtypes.into_iter().filter_map(|d| self.close(d)).collect()
    }

    /// Where tensor `index` went, once its bucket has closed.
    pub fn slot(&self, index: usize) -> Option<Slot> {
        let (bucket, offset) = (*self.placed.get(index)?)?;
        let (_, _, len) = self.slots[index];
        Some(Slot {
            bucket,
            offset,
            len,
        })
    }

    fn close(&mut self, dtype: DType) -> Option<Bucket> {
        let open = self.open.remove(&dtype)?;
        if open.tensors.is_empty() {
            return None;
        }
        let index = self.closed;
        self.closed += 1;
        for &t in &open.tensors {
            self.placed[t] = Some((index, self.slots[t].1));
        }
        Some(Bucket {
            index,
            dtype,
            tensors: open.tensors,
            len: open.len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(cap: usize, pushes: &[(DType, usize)]) -> (Bucketer, Vec<Bucket>) {
        let mut b = Bucketer::new(cap);
        let mut all = Vec::new();
        for (i, &(d, n)) in pushes.iter().enumerate() {
            let (index, closed) = b.push(d, n);
            assert_eq!(index, i);
            all.extend(closed);
        }
        all.extend(b.finish());
        (b, all)
    }

    #[test]
    fn fills_to_the_cap_exactly_and_one_past() {
        // f32, cap 16 bytes = 4 elements.
        let (_, b) = run(16, &[(DType::F32, 2), (DType::F32, 2), (DType::F32, 1)]);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].tensors, vec![0, 1]); // exactly at the cap: closed at once
        assert_eq!(b[1].tensors, vec![2]);
        let (_, b) = run(16, &[(DType::F32, 2), (DType::F32, 3)]);
        assert_eq!(b.len(), 2); // one element past: the second starts a new bucket
        assert_eq!((b[0].len, b[1].len), (2, 3));
    }

    #[test]
    fn an_oversized_tensor_is_a_bucket_of_its_own() {
        let (bk, b) = run(16, &[(DType::F32, 1), (DType::F32, 100), (DType::F32, 1)]);
        assert_eq!(
            b.iter().map(|b| b.tensors.clone()).collect::<Vec<_>>(),
            vec![vec![0], vec![1], vec![2]]
        );
        assert_eq!(bk.slot(1).unwrap().len, 100);
    }

    #[test]
    fn dtypes_have_their_own_buckets() {
        let (_, b) = run(
            1 << 20,
            &[(DType::F32, 3), (DType::F64, 2), (DType::F32, 1)],
        );
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].dtype, b[0].tensors.clone()), (DType::F32, vec![0, 2]));
        assert_eq!((b[1].dtype, b[1].tensors.clone()), (DType::F64, vec![1]));
    }

    fn dtype() -> impl Strategy<Value = DType> {
        prop::sample::select(DType::ALL.to_vec())
    }

    proptest! {
        /// Every tensor lands in exactly one bucket of its dtype, at consecutive offsets;
        /// no bucket passes the cap unless it is one tensor; and the layout depends only
        /// on the pushes (a second bucketer agrees).
        #[test]
        fn layout_covers_every_tensor_once(
            cap in 0usize..4096,
            pushes in prop::collection::vec((dtype(), 0usize..600), 0..60),
        ) {
            let (bk, buckets) = run(cap, &pushes);
            let (_, again) = run(cap, &pushes);
            prop_assert_eq!(&buckets, &again);
            let mut seen = vec![0u32; pushes.len()];
            for (i, b) in buckets.iter().enumerate() {
                prop_assert_eq!(b.index, i);
                let mut at = 0;
                for &t in &b.tensors {
                    seen[t] += 1;
                    let s = bk.slot(t).unwrap();
                    prop_assert_eq!(pushes[t].0, b.dtype);
                    prop_assert_eq!((s.bucket, s.offset, s.len), (i, at, pushes[t].1));
                    at += s.len;
                }
                prop_assert_eq!(at, b.len);
                let non_empty = b.tensors.iter().filter(|&&t| pushes[t].1 > 0).count();
                prop_assert!(b.len * b.dtype.size() <= cap || non_empty == 1);
                prop_assert!(b.tensors.windows(2).all(|w| w[0] < w[1]));
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
