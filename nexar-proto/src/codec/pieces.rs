//! [`Pieces`]: a byte string held as the slices it arrived in.
//!
//! QUIC hands a stream's data over one packet at a time, so a 256 KiB chunk frame arrives
//! in four or five slices of received datagrams. Joining them costs a copy of every byte
//! (and the growth copies of the buffer they are joined in) only for the collective layer
//! to copy or reduce them once more into the operation's buffer. A chunk's payload is
//! therefore kept as the received slices, and the one copy that must happen (into the
//! buffer) reads them in turn. On the send side the same type lets a received payload go
//! out again as it is (the ring all-gather forwards blocks).

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// A byte string in one or more non-empty [`Bytes`] slices, in order.
///
/// Equality is by content: how the bytes are split is not part of the value.
#[derive(Clone, Default)]
pub struct Pieces {
    /// Never holds an empty slice.
    parts: Parts,
    len: usize,
}

/// One slice inline: most payloads (every one sent, and those received within a single
/// QUIC read) are one slice, and a vector would cost an allocation per chunk.
#[derive(Clone)]
enum Parts {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Default for Parts {
    fn default() -> Self {
        Parts::Many(Vec::new())
    }
}

impl Pieces {
    /// The pieces of `parts`, in order (empty ones are dropped).
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let mut parts = parts.into_iter().filter(|p| !p.is_empty());
        let Some(first) = parts.next() else {
            return Pieces::default();
        };
        let parts = match parts.next() {
            None => Parts::One(first),
            Some(second) => Parts::Many([first, second].into_iter().chain(parts).collect()),
        };
        let mut pieces = Pieces { parts, len: 0 };
        pieces.len = pieces.parts().iter().map(Bytes::len).sum();
        pieces
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slices, in order; none is empty.
    pub fn parts(&self) -> &[Bytes] {
        match &self.parts {
            Parts::One(one) => std::slice::from_ref(one),
            Parts::Many(many) => many,
        }
    }

    /// The bytes as one slice: free when there is one piece, a copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match self.parts() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// The bytes of `range` as pieces that share this value's memory.
    ///
    /// # Panics
    /// If `range` is out of bounds (a caller bug: decoders check lengths first).
    pub fn slice(&self, range: Range<usize>) -> Pieces {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} out of bounds of {} bytes",
            self.len
        );
        let mut at = 0;
        let parts = self.parts().iter().filter_map(|p| {
            let (start, end) = (at, at + p.len());
            at = end;
            let lo = range.start.clamp(start, end) - start;
            let hi = range.end.clamp(start, end) - start;
            (lo < hi).then(|| p.slice(lo..hi))
        });
        Pieces::from_parts(parts)
    }

    /// A copy of the first `n` bytes (at most the length), joined.
    pub fn copy_prefix(&self, n: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(n.min(self.len));
        for p in self.parts() {
            let take = (n - out.len()).min(p.len());
            out.extend_from_slice(&p[..take]);
            if out.len() == n {
                break;
            }
        }
        out.freeze()
    }

    /// The bytes in one vector (a copy), for tests and diagnostics.
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_bytes().to_vec()
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Self {
        Pieces::from_parts([bytes])
    }
}

impl From<Vec<u8>> for Pieces {
    fn from(bytes: Vec<u8>) -> Self {
        Pieces::from(Bytes::from(bytes))
    }
}

impl PartialEq for Pieces {
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        // Walk both splits at once, comparing the longest runs both have contiguous.
        let (mut a, mut b) = (self.parts().iter(), other.parts().iter());
        let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
        loop {
            if x.is_empty() {
                match a.next() {
                    Some(p) => x = p,
                    None => return true, // equal lengths: `y` is done too
                }
            }
            if y.is_empty() {
                match b.next() {
                    Some(p) => y = p,
                    None => return true,
                }
            }
            let n = x.len().min(y.len());
            if x[..n] != y[..n] {
                return false;
            }
            (x, y) = (&x[n..], &y[n..]);
        }
    }
}

impl Eq for Pieces {}

impl fmt::Debug for Pieces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pieces({} bytes in {})", self.len, self.parts().len())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split(data: &[u8], cuts: &[usize]) -> Pieces {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            parts.push(Bytes::copy_from_slice(&data[at..c]));
            at = c;
        }
        Pieces::from_parts(parts)
    }

    proptest! {
        #[test]
        fn content_not_split_decides(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            lo in any::<usize>(),
            hi in any::<usize>(),
        ) {
            let p = split(&data, &cuts);
            prop_assert_eq!(p.len(), data.len());
            prop_assert!(p.parts().iter().all(|x| !x.is_empty()));
            prop_assert_eq!(&p.to_bytes()[..], &data[..]);
            prop_assert_eq!(&p, &Pieces::from(data.clone()));
            let (lo, hi) = {
                let (a, b) = (lo % (data.len() + 1), hi % (data.len() + 1));
                (a.min(b), a.max(b))
            };
            prop_assert_eq!(&p.slice(lo..hi).to_vec()[..], &data[lo..hi]);
            prop_assert_eq!(p.slice(lo..hi).len(), hi - lo);
            prop_assert_eq!(&p.copy_prefix(hi)[..], &data[..hi]);
            if !data.is_empty() {
                let mut other = data.clone();
                other[lo % data.len()] ^= 1;
                prop_assert_ne!(&p, &Pieces::from(other));
            }
        }
    }

    #[test]
    fn one_piece_is_shared_not_copied() {
        let b = Bytes::from(vec![7u8; 64]);
        let p = Pieces::from(b.clone());
        assert_eq!(p.to_bytes().as_ptr(), b.as_ptr());
        assert_eq!(p.slice(8..16).parts()[0].as_ptr(), b[8..].as_ptr());
    }
}
