//! Typed buffers that move through the executor, and the reduction kernels over them.
//!
//! A collective takes an owned [`Buffer`] and gives it back in `Completed`, so the core
//! never borrows the user's memory across calls. Data on the wire is little-endian; the
//! kernels read it in blocks into a small stack array and reduce slice against slice,
//! which is the shape LLVM vectorises (a byte-at-a-time loop would not be).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use half::{bf16, f16};

use crate::codec::{DType, Pieces, ReduceOp};

mod sealed {
    pub trait Sealed {}
}

/// A number type collectives operate on. Sealed: the set matches [`DType`].
///
/// Every element is plain old data (`bytemuck::Pod`): on little-endian targets, where the
/// wire order is the memory order, the bulk paths copy a slice's bytes in one `memcpy`.
pub trait Element: bytemuck::Pod + PartialOrd + Send + Sync + 'static + sealed::Sealed {
    /// The wire name of this type.
    const DTYPE: DType;
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Decode from exactly `SIZE` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Encode as little-endian into `out`.
    fn put_le(self, out: &mut BytesMut);
    /// Encode as little-endian into exactly `SIZE` bytes (the bulk paths: a loop of these
    /// over `chunks_exact_mut(SIZE)` compiles to a plain copy on little-endian targets).
    fn write_le(self, out: &mut [u8]);
    /// `op(a, b)`; integers wrap instead of overflowing.
    fn combine(op: ReduceOp, a: Self, b: Self) -> Self;
    /// The value `x` with `op(identity, x) == x`.
    fn identity(op: ReduceOp) -> Self;
    /// `self / n` for `Avg` (floating types only; integers are refused before this).
    fn div_count(self, n: u32) -> Self;
    /// `dst[i] = op(dst[i], src[i])` over slices; types whose scalar arithmetic is slow
    /// (f16, bf16) override it with a block-wise path.
    #[inline]
    fn reduce_into(dst: &mut [Self], src: &[Self], op: ReduceOp) {
        reduce_generic(dst, src, op);
    }
    /// Wrap a vector as a [`Buffer`].
    fn into_buffer(v: Vec<Self>) -> Buffer;
    /// Take the vector back out of a buffer of this type.
    fn from_buffer(b: Buffer) -> Result<Vec<Self>, Buffer>;
    /// Borrow the elements of a buffer of this type.
    fn slice(b: &Buffer) -> Option<&[Self]>;
    /// Borrow the elements of a buffer of this type, mutably.
    fn slice_mut(b: &mut Buffer) -> Option<&mut [Self]>;
}

macro_rules! element {
    ($t:ty, $variant:ident, $size:expr, float, $from:expr, $to:expr, $reduce:path) => {
        element!(@common $t, $variant, $size, $from, $to);
        impl Element for $t {
            element!(@methods $t, $variant, $size, $from, $to);
            #[inline]
            fn reduce_into(dst: &mut [Self], src: &[Self], op: ReduceOp) {
                $reduce(dst, src, op);
            }
            #[inline]
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => a + b,
                    ReduceOp::Prod => a * b,
                    ReduceOp::Min => if b < a { b } else { a },
                    ReduceOp::Max => if b > a { b } else { a },
                    _ => b,
                }
            }
            fn identity(op: ReduceOp) -> Self {
                match op {
                    ReduceOp::Prod => <$t>::from_f32_const(1.0),
                    ReduceOp::Min => <$t>::INFINITY,
                    ReduceOp::Max => <$t>::NEG_INFINITY,
                    _ => <$t>::from_f32_const(0.0),
                }
            }
            fn div_count(self, n: u32) -> Self {
                self / <$t>::from_f64_const(f64::from(n))
            }
        }
    };
    ($t:ty, $variant:ident, $size:expr, int) => {
        element!(@common $t, $variant, $size, <$t>::from_le_bytes, <$t>::to_le_bytes);
        impl Element for $t {
            element!(@methods $t, $variant, $size, <$t>::from_le_bytes, <$t>::to_le_bytes);
            #[inline]
            fn combine(op: ReduceOp, a: Self, b: Self) -> Self {
                match op {
                    ReduceOp::Sum | ReduceOp::Avg => a.wrapping_add(b),
                    ReduceOp::Prod => a.wrapping_mul(b),
                    ReduceOp::Min => a.min(b),
                    ReduceOp::Max => a.max(b),
                    _ => b,
                }
            }
            fn identity(op: ReduceOp) -> Self {
                match op {
                    ReduceOp::Prod => 1,
                    ReduceOp::Min => <$t>::MAX,
                    ReduceOp::Max => <$t>::MIN,
                    _ => 0,
                }
            }
            fn div_count(self, n: u32) -> Self {
                // Unreachable through the API (Avg is refused for integers); defined anyway.
                self / (n.max(1) as $t)
            }
        }
    };
    (@common $t:ty, $variant:ident, $size:expr, $from:expr, $to:expr) => {
        impl sealed::Sealed for $t {}
    };
    (@methods $t:ty, $variant:ident, $size:expr, $from:expr, $to:expr) => {
        const DTYPE: DType = DType::$variant;
        const SIZE: usize = $size;
        #[inline]
        fn from_le(bytes: &[u8]) -> Self {
            let mut a = [0u8; $size];
            a.copy_from_slice(bytes);
            ($from)(a)
        }
        #[inline]
        fn put_le(self, out: &mut BytesMut) {
            out.put_slice(&($to)(self));
        }
        #[inline]
        fn write_le(self, out: &mut [u8]) {
            out.copy_from_slice(&($to)(self));
        }
        fn into_buffer(v: Vec<Self>) -> Buffer {
            Buffer::$variant(v)
        }
        fn from_buffer(b: Buffer) -> Result<Vec<Self>, Buffer> {
            match b {
                Buffer::$variant(v) => Ok(v),
                other => Err(other),
            }
        }
        fn slice(b: &Buffer) -> Option<&[Self]> {
            match b {
                Buffer::$variant(v) => Some(v),
                _ => None,
            }
        }
        fn slice_mut(b: &mut Buffer) -> Option<&mut [Self]> {
            match b {
                Buffer::$variant(v) => Some(v),
                _ => None,
            }
        }
    };
}

/// `from_f32_const`/`from_f64_const` for f32 and f64, so one macro arm serves all floats.
trait FloatConst {
    fn from_f32_const(x: f32) -> Self;
    fn from_f64_const(x: f64) -> Self;
}
impl FloatConst for f32 {
    fn from_f32_const(x: f32) -> Self {
        x
    }
    fn from_f64_const(x: f64) -> Self {
        x as f32
    }
}
impl FloatConst for f64 {
    fn from_f32_const(x: f32) -> Self {
        f64::from(x)
    }
    fn from_f64_const(x: f64) -> Self {
        x
    }
}
impl FloatConst for f16 {
    fn from_f32_const(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn from_f64_const(x: f64) -> Self {
        f16::from_f64(x)
    }
}
impl FloatConst for bf16 {
    fn from_f32_const(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn from_f64_const(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

element!(
    f32,
    F32,
    4,
    float,
    f32::from_le_bytes,
    f32::to_le_bytes,
    reduce_generic
);
element!(
    f64,
    F64,
    8,
    float,
    f64::from_le_bytes,
    f64::to_le_bytes,
    reduce_generic
);
element!(
    f16,
    F16,
    2,
    float,
    f16::from_le_bytes,
    f16::to_le_bytes,
    reduce_half
);
element!(
    bf16,
    BF16,
    2,
    float,
    bf16::from_le_bytes,
    bf16::to_le_bytes,
    reduce_half
);
element!(i8, I8, 1, int);
element!(u8, U8, 1, int);
element!(i32, I32, 4, int);
element!(u32, U32, 4, int);
element!(i64, I64, 8, int);
element!(u64, U64, 8, int);

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

    /// Fill `range` with `op`'s identity.
    pub fn fill_identity(&mut self, range: Range<usize>, op: ReduceOp) {
        fn fill<T: Element>(v: &mut [T], op: ReduceOp) {
            v.fill(T::identity(op));
        }
        with_vec!(self, v => fill(&mut v[range], op))
    }
}

/// `dst[i] = op(dst[i], src[i])`: the kernel every reduction runs through.
#[inline]
pub fn reduce_slice<T: Element>(dst: &mut [T], src: &[T], op: ReduceOp) {
    T::reduce_into(dst, src, op);
}

/// One tight loop per op, so it vectorises.
#[inline]
fn reduce_generic<T: Element>(dst: &mut [T], src: &[T], op: ReduceOp) {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = T::combine(ReduceOp::Sum, *d, *s);
            }
        }
        ReduceOp::Prod => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = T::combine(ReduceOp::Prod, *d, *s);
            }
        }
        ReduceOp::Min => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = T::combine(ReduceOp::Min, *d, *s);
            }
        }
        ReduceOp::Max => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = T::combine(ReduceOp::Max, *d, *s);
            }
        }
        _ => dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s),
    }
}

/// Half-precision types through f32 blocks: convert (vectorised by `half`), reduce in f32,
/// round back. Bit-identical to the scalar path, which also computes in f32 and rounds
/// once, but an order of magnitude faster.
fn reduce_half<H>(dst: &mut [H], src: &[H], op: ReduceOp)
where
    H: Element,
    [H]: half::slice::HalfFloatSliceExt,
{
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 1024;
    let mut a = [0f32; BLOCK];
    let mut b = [0f32; BLOCK];
    for (d, s) in dst.chunks_mut(BLOCK).zip(src.chunks(BLOCK)) {
        let n = d.len().min(s.len());
        d[..n].convert_to_f32_slice(&mut a[..n]);
        s[..n].convert_to_f32_slice(&mut b[..n]);
        reduce_generic(&mut a[..n], &b[..n], op);
        d[..n].convert_from_f32_slice(&a[..n]);
    }
}

/// Reduce little-endian bytes into `dst`: decode a block onto the stack, then
/// [`reduce_slice`], so the hot loop is slice against slice.
pub fn reduce_le<T: Element>(dst: &mut [T], src: &[u8], op: ReduceOp) {
    const BLOCK: usize = 512;
    let mut tmp = [T::identity(ReduceOp::Sum); BLOCK];
    for (d, s) in dst.chunks_mut(BLOCK).zip(src.chunks(BLOCK * T::SIZE)) {
        let n = d.len().min(s.len() / T::SIZE);
        if cfg!(target_endian = "little") {
            bytemuck::cast_slice_mut::<T, u8>(&mut tmp[..n]).copy_from_slice(&s[..n * T::SIZE]);
        } else {
            for (t, b) in tmp[..n].iter_mut().zip(s.chunks_exact(T::SIZE)) {
                *t = T::from_le(b);
            }
        }
        reduce_slice(&mut d[..n], &tmp[..n], op);
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
    fn kernels_match_scalar_reference() {
        let a: Vec<f32> = (0..2000).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..2000).map(|i| (i % 7) as f32 - 3.0).collect();
        for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max] {
            let mut d = a.clone();
            let bytes: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
            reduce_le(&mut d, &bytes, op);
            for i in 0..a.len() {
                assert_eq!(d[i].to_bits(), f32::combine(op, a[i], b[i]).to_bits());
            }
        }
        let mut i = vec![i32::MAX, 5];
        reduce_slice(&mut i, &[1, -7], ReduceOp::Sum);
        assert_eq!(i, vec![i32::MIN, -2]);
    }

    #[test]
    fn half_block_path_matches_scalar_arithmetic() {
        let a: Vec<f16> = (0..3000)
            .map(|i| f16::from_f32(i as f32 * 0.37 - 400.0))
            .collect();
        let b: Vec<f16> = (0..3000)
            .map(|i| f16::from_f32((i % 13) as f32 * 1.7 - 9.0))
            .collect();
        for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max] {
            let mut d = a.clone();
            reduce_slice(&mut d, &b, op);
            for i in 0..a.len() {
                assert_eq!(
                    d[i].to_bits(),
                    f16::combine(op, a[i], b[i]).to_bits(),
                    "{op:?} {i}"
                );
            }
            let a16: Vec<bf16> = a.iter().map(|x| bf16::from_f32(x.to_f32())).collect();
            let b16: Vec<bf16> = b.iter().map(|x| bf16::from_f32(x.to_f32())).collect();
            let mut d16 = a16.clone();
            reduce_slice(&mut d16, &b16, op);
            for i in 0..a.len() {
                assert_eq!(
                    d16[i].to_bits(),
                    bf16::combine(op, a16[i], b16[i]).to_bits()
                );
            }
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
