//! Kept apart from [`Buffer`] because the element types are a contract of their own: the
//! typed API (`all_reduce(&mut [f32], ..)`) and the owned buffer must agree on which
//! number types exist, their wire form and their arithmetic, and this one sealed trait,
//! implemented by one macro for every [`DType`], is where they agree. Adding or changing
//! an element type touches only this file.

use bytes::{BufMut, BytesMut};
use half::{bf16, f16};

use super::kernels::{reduce_generic, reduce_half};
use super::Buffer;
use crate::codec::{DType, ReduceOp};

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
