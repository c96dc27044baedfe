//! Typed buffers that move through the executor, and the reduction kernels over them.
//!
//! A collective takes an owned [`Buffer`] and gives it back in `Completed`, so the core
//! never borrows the user's memory across calls. Data on the wire is little-endian; the
//! kernels read it in blocks into a small stack array and reduce slice against slice,
//! which is the shape LLVM vectorises (a byte-at-a-time loop would not be).

mod element;
mod kernels;

use std::ops::Range;

use bytes::Bytes;
use half::{bf16, f16};

use crate::codec::{DType, Pieces, ReduceOp};

pub use element::Element;
pub use kernels::{reduce_le, reduce_slice};

/// An owned vector of one of the supported element types.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

/// Run `$body` with `$v` bound to the typed vector, whatever the variant.
macro_rules! with_vec {
    ($buf:expr, $v:ident => $body:expr) => {
        match $buf {
            Buffer::F32($v) => $body,
            Buffer::F64($v) => $body,
            Buffer::F16($v) => $body,
            Buffer::BF16($v) => $body,
            Buffer::I8($v) => $body,
            Buffer::U8($v) => $body,
            Buffer::I32($v) => $body,
            Buffer::U32($v) => $body,
            Buffer::I64($v) => $body,
            Buffer::U64($v) => $body,
        }
    };
}

/// Run `$body` with `$T` bound to the element type for `$dtype`.
macro_rules! with_type {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::F16 => {
                type $T = f16;
                $body
            }
            DType::BF16 => {
                type $T = bf16;
                $body
            }
            DType::I8 => {
                type $T = i8;
                $body
            }
            DType::U8 => {
                type $T = u8;
                $body
            }
            DType::I32 => {
                type $T = i32;
                $body
            }
            DType::U32 => {
                type $T = u32;
                $body
            }
            DType::I64 => {
                type $T = i64;
                $body
            }
            _ => {
                type $T = u64;
                $body
            }
        }
    };
}

impl Buffer {
    /// Wrap a typed vector.
    pub fn from_vec<T: Element>(v: Vec<T>) -> Self {
        T::into_buffer(v)
    }

    /// The typed vector, or the buffer back if `T` is the wrong type.
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>, Self> {
        T::from_buffer(self)
    }

    /// `len` elements set to `op`'s identity.
    pub fn filled(dtype: DType, op: ReduceOp, len: usize) -> Self {
        with_type!(dtype, T => Buffer::from_vec(vec![<T as Element>::identity(op); len]))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        fn dt<T: Element>(_: &[T]) -> DType {
            T::DTYPE
        }
        with_vec!(self, v => dt(v))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_vec!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Little-endian bytes of `range` (the caller checked it is in bounds).
    pub fn encode_range(&self, range: Range<usize>) -> Bytes {
        fn enc<T: Element>(v: &[T]) -> Bytes {
            if cfg!(target_endian = "little") {
                // No zeroed buffer first: one allocation and one copy.
                return Bytes::copy_from_slice(bytemuck::cast_slice(v));
            }
            let mut out = vec![0u8; v.len() * T::SIZE];
            for (o, x) in out.chunks_exact_mut(T::SIZE).zip(v) {
                x.write_le(o);
            }
            Bytes::from(out)
        }
        with_vec!(self, v => enc(&v[range]))
    }

    /// Apply little-endian `bytes` at element `start`: copy, or reduce with `op`.
    /// The caller checked that `bytes` is a whole number of elements that fits.
    pub fn apply_le(&mut self, start: usize, bytes: &[u8], op: Option<ReduceOp>) {
        fn app<T: Element>(v: &mut [T], start: usize, bytes: &[u8], op: Option<ReduceOp>) {
            let n = bytes.len() / T::SIZE;
            let dst = &mut v[start..start + n];
            match op {
                Some(op) => reduce_le(dst, bytes, op),
                None if cfg!(target_endian = "little") => {
                    bytemuck::cast_slice_mut::<T, u8>(dst).copy_from_slice(bytes);
                }
                None => {
                    for (d, s) in dst.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
                        *d = T::from_le(s);
                    }
                }
            }
        }
        with_vec!(self, v => app(v, start, bytes, op))
    }

    /// [`apply_le`](Self::apply_le) over a payload in pieces, in order. An element split
    /// between two pieces is joined in a small buffer first. The caller checked that the
    /// pieces hold a whole number of elements that fits.
    pub fn apply_pieces(&mut self, start: usize, payload: &Pieces, op: Option<ReduceOp>) {
        let elem = self.dtype().size();
        let mut at = start;
        let mut split = [0u8; 16];
        let mut split_len = 0;
        for piece in payload.parts() {
            let mut bytes = &piece[..];
            if split_len > 0 {
                let take = (elem - split_len).min(bytes.len());
                split[split_len..split_len + take].copy_from_slice(&bytes[..take]);
                split_len += take;
                bytes = &bytes[take..];
                if split_len < elem {
                    continue;
                }
                self.apply_le(at, &split[..elem], op);
                at += 1;
            }
            let whole = bytes.len() / elem * elem;
            self.apply_le(at, &bytes[..whole], op);
            at += whole / elem;
            split_len = bytes.len() - whole;
            split[..split_len].copy_from_slice(&bytes[whole..]);
        }
    }

    /// Copy or reduce `src` into the range starting at `dst` (non-overlapping).
    pub fn local(&mut self, src: Range<usize>, dst: usize, op: Option<ReduceOp>) {
        fn loc<T: Element>(v: &mut [T], src: Range<usize>, dst: usize, op: Option<ReduceOp>) {
            let n = src.len();
            match op {
                None => v.copy_within(src, dst),
                Some(op) => {
                    for i in 0..n {
                        v[dst + i] = T::combine(op, v[dst + i], v[src.start + i]);
                    }
                }
            }
        }
        with_vec!(self, v => loc(v, src, dst, op))
    }

    /// Copy `src_range` of `src` (same type) to `dst_start` of `self`.
    /// Returns false (and copies nothing) if the types differ.
    pub fn copy_from(&mut self, dst_start: usize, src: &Buffer, src_range: Range<usize>) -> bool {
        fn cp<T: Element>(dst: &mut Buffer, at: usize, src: &Buffer, r: Range<usize>) -> bool {
            match (T::slice_mut(dst), T::slice(src)) {
                (Some(d), Some(s)) => {
                    d[at..at + r.len()].copy_from_slice(&s[r]);
                    true
                }
                _ => false,
            }
        }
        with_type!(self.dtype(), T => cp::<T>(self, dst_start, src, src_range))
    }

    /// Divide `range` by `n` (for `Avg`).
    pub fn divide(&mut self, range: Range<usize>, n: u32) {
        fn div<T: Element>(v: &mut [T], n: u32) {
            for x in v {
                *x = x.div_count(n);
            }
        }
        with_vec!(self, v => div(&mut v[range], n))
    }

    /// A buffer of `len` default (identity-of-sum) elements of the same type.
    pub fn zeros_like(&self, len: usize) -> Buffer {
        Buffer::filled(self.dtype(), ReduceOp::Sum, len)
    }

    /// Shrink or extend to `len` (new elements are zero).
    pub fn resize(&mut self, len: usize) {
        fn rs<T: Element>(v: &mut Vec<T>, len: usize) {
            v.resize(len, T::identity(ReduceOp::Sum));
        }
        with_vec!(self, v => rs(v, len))
    }

    /// Append `src` (same type) at the end; false (and nothing appended) if the types
    /// differ. Fusing tensors into one bucket is this, once per tensor.
    pub fn append(&mut self, src: &Buffer) -> bool {
        fn app<T: Element>(v: &mut Vec<T>, src: &Buffer) -> bool {
            match T::slice(src) {
                Some(s) => {
                    v.extend_from_slice(s);
                    true
                }
                None => false,
            }
        }
        with_vec!(self, v => app(v, src))
    }

    /// A new buffer holding a copy of `range` (the caller checked it is in bounds).
    pub fn copy_range(&self, range: Range<usize>) -> Buffer {
        with_vec!(self, v => Buffer::from_vec(v[range].to_vec()))
    }

    /// Fill `range` with `op`'s identity.
    pub fn fill_identity(&mut self, range: Range<usize>, op: ReduceOp) {
        fn fill<T: Element>(v: &mut [T], op: ReduceOp) {
            v.fill(T::identity(op));
        }
        with_vec!(self, v => fill(&mut v[range], op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_that_split_elements_apply_like_the_joined_bytes() {
        let values: Vec<f64> = (0..64).map(|i| i as f64 * 1.5 - 7.0).collect();
        let joined = Buffer::from_vec(values.clone()).encode_range(0..64);
        // Cuts inside elements, on their edges, and empty pieces.
        for cuts in [
            vec![3, 3, 17, 64, 65, 200],
            vec![1, 2, 5, 8, 13, 511],
            vec![],
        ] {
            let mut parts = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([joined.len()]) {
                parts.push(joined.slice(at..c));
                at = c;
            }
            let pieces = Pieces::from_parts(parts);
            for op in [None, Some(ReduceOp::Sum)] {
                let mut a = Buffer::from_vec(vec![1f64; 70]);
                let mut b = Buffer::from_vec(vec![1f64; 70]);
                a.apply_le(3, &joined, op);
                b.apply_pieces(3, &pieces, op);
                assert_eq!(a.into_vec::<f64>().unwrap(), b.into_vec::<f64>().unwrap());
            }
        }
    }

    #[test]
    fn encode_apply_round_trip_every_dtype() {
        for dtype in DType::ALL.iter().copied() {
            let mut a = Buffer::filled(dtype, ReduceOp::Prod, 5); // ones
            let b = a.encode_range(1..4);
            assert_eq!(b.len(), 3 * dtype.size());
            let mut z = a.zeros_like(5);
            z.apply_le(2, &b, None);
            a.apply_le(0, &b, Some(ReduceOp::Sum)); // 1 + 1 = 2 in the first three
            assert_eq!(a.dtype(), dtype);
            let two = Buffer::filled(dtype, ReduceOp::Prod, 1);
            let mut expect = two.clone();
            expect.apply_le(0, &two.encode_range(0..1), Some(ReduceOp::Sum));
            assert_eq!(a.encode_range(0..1), expect.encode_range(0..1));
            assert_eq!(z.encode_range(2..5), b);
        }
    }

    #[test]
    fn typed_access() {
        let b = Buffer::from_vec(vec![1u64, 2]);
        assert_eq!(b.dtype(), DType::U64);
        assert!(b.clone().into_vec::<f32>().is_err());
        assert_eq!(b.into_vec::<u64>().unwrap(), vec![1, 2]);
    }
}
