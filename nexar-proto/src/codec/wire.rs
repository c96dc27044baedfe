//! Little-endian field encoding shared by every message: integers, addresses, options,
//! length-prefixed bytes and counted vectors.
//!
//! Writers are infallible (the frame length is checked once, in `Message::encode`);
//! the [`Reader`] checks every length against the bytes present and the configured limit
//! before allocating, and names the field in its errors.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, UnknownCode};

/// Address family byte for IPv4.
pub(crate) const FAMILY_V4: u8 = 4;
/// Address family byte for IPv6.
pub(crate) const FAMILY_V6: u8 = 6;
/// The smallest encoded address (IPv4), for vector count checks.
pub(crate) const ADDR_MIN_LEN: usize = 1 + 4 + 2;

pub(crate) fn addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Family byte, address octets in network order, port little-endian.
///
/// IPv6 flow info and scope id are not sent: both only mean something on the sending host.
pub(crate) fn put_addr(out: &mut BytesMut, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            out.put_u8(FAMILY_V4);
            out.put_slice(&a.ip().octets());
            out.put_u16_le(a.port());
        }
        SocketAddr::V6(a) => {
            out.put_u8(FAMILY_V6);
            out.put_slice(&a.ip().octets());
            out.put_u16_le(a.port());
        }
    }
}

pub(crate) fn opt_u32_len(value: Option<u32>) -> usize {
    1 + value.map_or(0, |_| 4)
}

/// Presence byte (0 or 1), then the value when present.
pub(crate) fn put_opt_u32(out: &mut BytesMut, value: Option<u32>) {
    match value {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            out.put_u32_le(v);
        }
    }
}

/// Writes a u32 length or count prefix.
///
/// The truncating cast cannot bite: `Message::encode` refuses bodies over `u32::MAX`
/// bytes before any field is written, and no field is longer than its body.
pub(crate) fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u32_le(len as u32);
}

pub(crate) fn bytes_len(bytes: &Bytes) -> usize {
    4 + bytes.len()
}

/// u32 length, then the bytes.
pub(crate) fn put_bytes(out: &mut BytesMut, bytes: &Bytes) {
    put_len(out, bytes.len());
    out.put_slice(bytes);
}

pub(crate) fn u32_vec_len(values: &[u32]) -> usize {
    4 + 4 * values.len()
}

/// u32 count, then each value.
pub(crate) fn put_u32_vec(out: &mut BytesMut, values: &[u32]) {
    put_len(out, values.len());
    for &v in values {
        out.put_u32_le(v);
    }
}

/// A cursor over one message payload.
///
/// Holds the payload as [`Bytes`] so byte fields come out as zero-copy slices of it.
#[derive(Debug)]
pub(crate) struct Reader {
    rest: Bytes,
}

impl Reader {
    pub(crate) fn new(payload: Bytes) -> Self {
        Reader { rest: payload }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn need(&self, needed: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.rest.len() < needed {
            Err(DecodeError::Truncated {
                needed,
                available: self.rest.len(),
                field,
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.rest.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.rest.get_u16_le())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.rest.get_u32_le())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.rest.get_u64_le())
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        self.need(N, field)?;
        let mut out = [0u8; N];
        self.rest.copy_to_slice(&mut out);
        Ok(out)
    }

    /// A u32-length-prefixed byte string of at most `limit` bytes, sliced without copying.
    pub(crate) fn bytes(&mut self, field: &'static str, limit: u32) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)?;
        if len > limit {
            return Err(DecodeError::FieldTooLarge {
                field,
                len: len.into(),
                limit: limit.into(),
            });
        }
        let len = len as usize;
        self.need(len, field)?;
        Ok(self.rest.split_to(len))
    }

    /// A u32 element count, refused unless `count <= limit` and the payload still holds
    /// at least `count * min_elem` bytes, so a vector's allocation is bounded by the
    /// bytes actually received rather than by what the peer claims.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_elem: usize,
        limit: u32,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)?;
        if count > limit {
            return Err(DecodeError::FieldTooLarge {
                field,
                len: count.into(),
                limit: limit.into(),
            });
        }
        let needed = u64::from(count).saturating_mul(min_elem as u64);
        if needed > self.rest.len() as u64 {
            return Err(DecodeError::Truncated {
                needed: usize::try_from(needed).unwrap_or(usize::MAX),
                available: self.rest.len(),
                field,
            });
        }
        Ok(count as usize)
    }

    /// A counted vector whose elements take at least `min_elem` bytes each.
    pub(crate) fn vec<T>(
        &mut self,
        field: &'static str,
        min_elem: usize,
        limit: u32,
        mut element: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.count(field, min_elem, limit)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(element(self)?);
        }
        Ok(out)
    }

    pub(crate) fn u32_vec(
        &mut self,
        field: &'static str,
        limit: u32,
    ) -> Result<Vec<u32>, DecodeError> {
        self.vec(field, 4, limit, |r| r.u32(field))
    }

    pub(crate) fn addr(&mut self, field: &'static str) -> Result<SocketAddr, DecodeError> {
        match self.u8(field)? {
            FAMILY_V4 => {
                let ip = Ipv4Addr::from(self.array::<4>(field)?);
                let port = self.u16(field)?;
                Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            FAMILY_V6 => {
                let ip = Ipv6Addr::from(self.array::<16>(field)?);
                let port = self.u16(field)?;
                Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
            }
            other => Err(DecodeError::BadField {
                field,
                reason: "unknown address family",
                value: other.into(),
            }),
        }
    }

    /// A presence byte; anything but 0 or 1 is refused so that each value has exactly one
    /// encoding.
    pub(crate) fn present(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::BadField {
                field,
                reason: "presence byte is neither 0 nor 1",
                value: other.into(),
            }),
        }
    }

    pub(crate) fn opt_u32(&mut self, field: &'static str) -> Result<Option<u32>, DecodeError> {
        if self.present(field)? {
            Ok(Some(self.u32(field)?))
        } else {
            Ok(None)
        }
    }

    /// A one-byte vocabulary code.
    pub(crate) fn code<T: TryFrom<u8, Error = UnknownCode>>(
        &mut self,
        field: &'static str,
    ) -> Result<T, DecodeError> {
        let code = self.u8(field)?;
        T::try_from(code).map_err(|_| DecodeError::BadField {
            field,
            reason: "unknown code",
            value: code.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_have_a_fixed_layout() {
        let mut out = BytesMut::new();
        put_addr(&mut out, &"192.0.2.1:258".parse().unwrap());
        assert_eq!(&out[..], &[4, 192, 0, 2, 1, 2, 1]);
        let mut r = Reader::new(out.freeze());
        assert_eq!(
            r.addr("a").unwrap(),
            "192.0.2.1:258".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(r.remaining(), 0);

        let mut bad = Reader::new(Bytes::from_static(&[5, 0, 0]));
        assert_eq!(
            bad.addr("a"),
            Err(DecodeError::BadField {
                field: "a",
                reason: "unknown address family",
                value: 5
            })
        );
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let claim = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        assert_eq!(
            Reader::new(claim.clone()).u32_vec("v", u32::MAX),
            Err(DecodeError::Truncated {
                needed: 4 * (u32::MAX as usize),
                available: 4,
                field: "v"
            })
        );
        assert_eq!(
            Reader::new(claim).u32_vec("v", 10),
            Err(DecodeError::FieldTooLarge {
                field: "v",
                len: u32::MAX.into(),
                limit: 10
            })
        );
    }

    #[test]
    fn byte_fields_are_zero_copy_slices() {
        let payload = Bytes::from_static(&[3, 0, 0, 0, 7, 8, 9, 10]);
        let mut r = Reader::new(payload.clone());
        let field = r.bytes("b", 100).unwrap();
        assert_eq!(&field[..], &[7, 8, 9]);
        assert_eq!(field.as_ptr(), payload[4..].as_ptr());
        assert_eq!(
            Reader::new(payload).bytes("b", 2),
            Err(DecodeError::FieldTooLarge {
                field: "b",
                len: 3,
                limit: 2
            })
        );
    }
}
