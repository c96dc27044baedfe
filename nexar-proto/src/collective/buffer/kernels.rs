//! Kept apart because every reduction, from the wire or between two buffers, runs through
//! these few loops, and their shape (slice against slice, in blocks on the stack) is what
//! lets LLVM vectorise them: in one place they are easy to find, to bench
//! (`benches/reduce.rs`) and to check against the scalar arithmetic (the tests below).

use super::Element;
use crate::codec::ReduceOp;

/// `dst[i] = op(dst[i], src[i])`: the kernel every reduction runs through.
#[inline]
pub fn reduce_slice<T: Element>(dst: &mut [T], src: &[T], op: ReduceOp) {
    T::reduce_into(dst, src, op);
}

/// One tight loop per op, so it vectorises.
#[inline]
pub(super) fn reduce_generic<T: Element>(dst: &mut [T], src: &[T], op: ReduceOp) {
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
pub(super) fn reduce_half<H>(dst: &mut [H], src: &[H], op: ReduceOp)
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
    use half::{bf16, f16};

    use super::*;

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
}
