//! Receiving tagged messages longer than one frame, part by part.
//!
//! A message nobody has asked for yet keeps its parts as they came (charged to the
//! sender's unmatched budget, so the stream pauses once the budget is spent); a message a
//! receive has claimed gets one buffer of its announced length, allocated at the claim
//! (the user asked for those bytes), and each part is copied straight into it.

use bytes::Bytes;

use super::Posted;
use crate::event::OpId;

/// Where a message's parts go.
#[derive(Debug)]
pub(super) enum Sink {
    /// No receive yet: the parts, detached from their receive buffers.
    Buffered(Vec<Bytes>),
    /// Claimed by the receive `posted`: the message, filled up to `received`.
    Posted { posted: Posted, buf: Vec<u8> },
}

/// A message whose start has arrived and whose parts are still coming.
#[derive(Debug)]
pub(super) struct Partial {
    pub(super) total: usize,
    pub(super) received: usize,
    pub(super) sink: Sink,
}

/// Why a part was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartError {
    /// The part does not start where the message's bytes so far end.
    Gap { expected: u64, got: u64 },
    /// The part runs past the announced length.
    Overrun { total: u64, end: u64 },
}

impl Partial {
    /// A message of `total` bytes; claimed by `posted` if a receive is waiting for it.
    pub(super) fn new(total: usize, posted: Option<Posted>) -> Self {
        let sink = match posted {
            Some(posted) => Sink::Posted {
                posted,
                buf: Vec::with_capacity(total),
            },
            None => Sink::Buffered(Vec::new()),
        };
        Partial {
            total,
            received: 0,
            sink,
        }
    }

    pub(super) fn is_complete(&self) -> bool {
        self.received == self.total
    }

    /// Take in the part at `offset`. Returns the bytes newly buffered unclaimed (which
    /// count against the sender's budget).
    pub(super) fn add(&mut self, offset: u64, data: Bytes) -> Result<usize, PartError> {
        if offset != self.received as u64 {
            return Err(PartError::Gap {
                expected: self.received as u64,
                got: offset,
            });
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.total as u64 {
            return Err(PartError::Overrun {
                total: self.total as u64,
                end,
            });
        }
        self.received += data.len();
        match &mut self.sink {
            Sink::Posted { buf, .. } => {
                buf.extend_from_slice(&data);
                Ok(0)
            }
            Sink::Buffered(parts) => {
                let n = data.len();
                if n > 0 {
                    parts.push(crate::retain::bytes(data));
                }
                Ok(n)
            }
        }
    }

    /// A receive claims the message: the buffered parts move into its buffer. Returns
    /// the bytes released from the unclaimed budget.
    pub(super) fn claim(&mut self, posted: Posted) -> usize {
        let Sink::Buffered(parts) = &mut self.sink else {
            return 0;
        };
        let mut buf = Vec::with_capacity(self.total);
        for part in parts.drain(..) {
            buf.extend_from_slice(&part);
        }
        let released = buf.len();
        self.sink = Sink::Posted { posted, buf };
        released
    }

    /// The claiming receive and its bytes, if the message is complete and claimed.
    pub(super) fn finish(self) -> Option<(Posted, Bytes)> {
        match self.sink {
            Sink::Posted { posted, buf } if self.received == self.total => {
                Some((posted, buf.into()))
            }
            _ => None,
        }
    }

    /// What it costs the sender's unclaimed budget: nothing once claimed.
    pub(super) fn charged(&self) -> usize {
        match self.sink {
            Sink::Buffered(_) => super::UNMATCHED_OVERHEAD + self.received,
            Sink::Posted { .. } => 0,
        }
    }

    /// The claiming receive, if any.
    pub(super) fn op(&self) -> Option<OpId> {
        match self.sink {
            Sink::Posted { posted, .. } => Some(posted.op),
            Sink::Buffered(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_must_be_back_to_back_and_within_the_length() {
        let mut p = Partial::new(10, None);
        assert_eq!(p.add(0, Bytes::from_static(b"abcd")), Ok(4));
        assert_eq!(
            p.add(5, Bytes::from_static(b"x")),
            Err(PartError::Gap {
                expected: 4,
                got: 5
            })
        );
        assert_eq!(
            p.add(4, Bytes::from_static(b"1234567")),
            Err(PartError::Overrun { total: 10, end: 11 })
        );
        let posted = Posted {
            op: OpId(3),
            from: 1,
        };
        assert_eq!(p.claim(posted), 4);
        assert_eq!(p.add(4, Bytes::from_static(b"efghij")), Ok(0));
        assert!(p.is_complete());
        let (claimed, data) = p.finish().unwrap();
        assert_eq!((claimed, &data[..]), (posted, &b"abcdefghij"[..]));
    }

    #[test]
    fn an_unclaimed_message_does_not_finish() {
        let mut p = Partial::new(1, None);
        assert_eq!(p.add(0, Bytes::from_static(b"z")), Ok(1));
        assert!(p.is_complete());
        assert_eq!(p.charged(), super::super::UNMATCHED_OVERHEAD + 1);
        assert!(p.finish().is_none());
    }
}
