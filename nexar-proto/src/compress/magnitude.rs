//! A total order on element magnitudes, so top-k is a function of the values alone.

use half::{bf16, f16};

use crate::collective::Element;

/// An element type whose magnitude (`|x|`) has a total order, as a `u64` key: larger
/// key, larger magnitude. Floats compare by their bits with the sign cleared, which orders
/// every non-negative value numerically, with infinity above every finite value and NaN
/// above infinity (a NaN gradient is sent first rather than hidden in the residual);
/// integers by their absolute value (`i8::MIN` is 128, not an overflow).
pub trait Magnitude: Element {
    /// The magnitude key.
    fn magnitude(self) -> u64;
}

macro_rules! float_magnitude {
    ($($t:ty => $mask:expr),*) => {$(
        impl Magnitude for $t {
            #[inline]
            fn magnitude(self) -> u64 {
                u64::from(self.to_bits() & $mask)
            }
        }
    )*};
}

float_magnitude!(f32 => 0x7fff_ffff, f16 => 0x7fff, bf16 => 0x7fff);

impl Magnitude for f64 {
    #[inline]
    fn magnitude(self) -> u64 {
        self.to_bits() & !(1 << 63)
    }
}

macro_rules! int_magnitude {
    (signed $($t:ty),*) => {$(
        impl Magnitude for $t {
            #[inline]
            fn magnitude(self) -> u64 {
                self.unsigned_abs() as u64
            }
        }
    )*};
    (unsigned $($t:ty),*) => {$(
        impl Magnitude for $t {
            #[inline]
            fn magnitude(self) -> u64 {
                self as u64
            }
        }
    )*};
}

int_magnitude!(signed i8, i32, i64);
int_magnitude!(unsigned u8, u32, u64);

#[cfg(test)]
mod tests {
    use super::*;

    /// The key's order is the order of `|x|` computed in f64 (exact for these values).
    #[test]
    fn keys_order_like_absolute_values() {
        let xs = [-3.5f64, 0.0, -0.0, 1e-300, 2.0, -2.0, f64::INFINITY, -1e300];
        for a in xs {
            for b in xs {
                assert_eq!(
                    a.magnitude().cmp(&b.magnitude()),
                    a.abs().partial_cmp(&b.abs()).unwrap(),
                    "{a} {b}"
                );
                let (fa, fb) = (a as f32, b as f32);
                assert_eq!(
                    fa.magnitude().cmp(&fb.magnitude()),
                    fa.abs().partial_cmp(&fb.abs()).unwrap()
                );
                let (ha, hb) = (f16::from_f64(a), f16::from_f64(b));
                assert_eq!(
                    ha.magnitude().cmp(&hb.magnitude()),
                    ha.to_f64().abs().partial_cmp(&hb.to_f64().abs()).unwrap()
                );
                let (ba, bb) = (bf16::from_f64(a), bf16::from_f64(b));
                assert_eq!(
                    ba.magnitude().cmp(&bb.magnitude()),
                    ba.to_f64().abs().partial_cmp(&bb.to_f64().abs()).unwrap()
                );
            }
        }
        assert!(f32::NAN.magnitude() > f32::INFINITY.magnitude());
        assert_eq!(i8::MIN.magnitude(), 128);
        assert_eq!(i64::MIN.magnitude(), 1 << 63);
        assert_eq!((-5i32).magnitude(), 5u32.magnitude());
        assert_eq!(u64::MAX.magnitude(), u64::MAX);
    }
}
