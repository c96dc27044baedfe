//! Collective data: [`Chunk`], its identity ([`ChunkHeader`]) and the [`Fingerprint`] that
//! rides on the first chunk of each collective.

use bytes::{BufMut, Bytes, BytesMut};

use super::message::{Body, WireMessage};
use super::wire::{self, Reader};
use super::{Algorithm, CollectiveKind, DType, DecodeError, Kind, Limits, Pieces, ReduceOp};

/// Identity and position of a chunk within a collective.
///
/// Communicator, sequence number and algorithm are separate fields rather than one
/// packed tag, so that no arithmetic can alias two operations (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Membership epoch the collective runs in; chunks from an older epoch are dropped.
    pub epoch: u64,
    /// Communicator id.
    pub comm: u64,
    /// Sequence number of the collective on that communicator.
    pub seq: u64,
    /// Plan the sender runs.
    pub algorithm: Algorithm,
    /// Plan step this chunk belongs to.
    pub step: u32,
    /// Byte offset of the payload within the step's data.
    pub offset: u64,
}

impl ChunkHeader {
    /// Encoded size.
    pub const ENCODED_LEN: usize = 8 + 8 + 8 + 1 + 4 + 8;

    fn put(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u64_le(self.comm);
        out.put_u64_le(self.seq);
        out.put_u8(self.algorithm.code());
        out.put_u32_le(self.step);
        out.put_u64_le(self.offset);
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(ChunkHeader {
            epoch: r.u64("chunk.epoch")?,
            comm: r.u64("chunk.comm")?,
            seq: r.u64("chunk.seq")?,
            algorithm: r.code("chunk.algorithm")?,
            step: r.u32("chunk.step")?,
            offset: r.u64("chunk.offset")?,
        })
    }
}

/// What the sender believes the collective is; compared by the receiver so that ranks
/// that called different collectives get a typed mismatch instead of a hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// The collective.
    pub kind: CollectiveKind,
    /// Element type.
    pub dtype: DType,
    /// Reduction ([`ReduceOp::None`] for non-reducing collectives).
    pub op: ReduceOp,
    /// Element count of the sender's buffer.
    pub count: u64,
    /// Root rank (0 for rootless collectives).
    pub root: u32,
    /// Plan the sender chose.
    pub algorithm: Algorithm,
}

impl Fingerprint {
    /// Encoded size.
    pub const ENCODED_LEN: usize = 1 + 1 + 1 + 8 + 4 + 1;

    fn put(&self, out: &mut BytesMut) {
        out.put_u8(self.kind.code());
        out.put_u8(self.dtype.code());
        out.put_u8(self.op.code());
        out.put_u64_le(self.count);
        out.put_u32_le(self.root);
        out.put_u8(self.algorithm.code());
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Fingerprint {
            kind: r.code("chunk.fingerprint.kind")?,
            dtype: r.code("chunk.fingerprint.dtype")?,
            op: r.code("chunk.fingerprint.op")?,
            count: r.u64("chunk.fingerprint.count")?,
            root: r.u32("chunk.fingerprint.root")?,
            algorithm: r.code("chunk.fingerprint.algorithm")?,
        })
    }
}

/// A piece of collective data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Identity and position.
    pub header: ChunkHeader,
    /// Present on the first chunk a rank sends for a collective.
    pub fingerprint: Option<Fingerprint>,
    /// The data; the bulk field, written last so it can be sent without copying. Received,
    /// it is the slices of the datagrams it came in (see [`Pieces`]).
    pub payload: Pieces,
}

impl Chunk {
    /// Largest non-payload part of a chunk's frame payload (with a fingerprint).
    pub const MAX_OVERHEAD: usize = ChunkHeader::ENCODED_LEN + 1 + Fingerprint::ENCODED_LEN + 4;

    /// Largest chunk payload that fits a frame under `limits`, fingerprint included; the
    /// collective layer splits data at this size so that no frame is refused.
    pub fn max_payload(limits: &Limits) -> usize {
        (limits.max_frame_len as usize).saturating_sub(Self::MAX_OVERHEAD)
    }
}

impl Body for Chunk {
    fn body_len(&self) -> usize {
        ChunkHeader::ENCODED_LEN
            + 1
            + self.fingerprint.map_or(0, |_| Fingerprint::ENCODED_LEN)
            + 4
            + self.payload.len()
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        self.header.put(out);
        match &self.fingerprint {
            None => out.put_u8(0),
            Some(fingerprint) => {
                out.put_u8(1);
                fingerprint.put(out);
            }
        }
        wire::put_len(out, self.payload.len());
    }

    fn bulk(&self) -> &[Bytes] {
        self.payload.parts()
    }
}

impl WireMessage for Chunk {
    const KIND: Kind = Kind::CHUNK;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        let header = ChunkHeader::read(r)?;
        let fingerprint = if r.present("chunk.fingerprint")? {
            Some(Fingerprint::read(r)?)
        } else {
            None
        };
        Ok(Chunk {
            header,
            fingerprint,
            payload: r.bytes("chunk.payload", u32::MAX)?.into(),
        })
    }
}

impl Chunk {
    /// Decodes a chunk frame's payload that arrived in several pieces, without joining
    /// them: the fields are read from a copy of at most [`Chunk::MAX_OVERHEAD`] leading
    /// bytes, and the payload is the rest of the pieces, sliced. Same result and same
    /// errors as [`Message::decode`](super::Message::decode) on the joined bytes.
    pub(crate) fn decode_pieces(payload: &Pieces) -> Result<Chunk, DecodeError> {
        let head = payload.copy_prefix(Self::MAX_OVERHEAD);
        let head_len = head.len();
        let mut r = Reader::new(head);
        let header = ChunkHeader::read(&mut r)?;
        let fingerprint = if r.present("chunk.fingerprint")? {
            Some(Fingerprint::read(&mut r)?)
        } else {
            None
        };
        let len = r.u32("chunk.payload")? as usize;
        let start = head_len - r.remaining();
        let available = payload.len() - start;
        if available < len {
            return Err(DecodeError::Truncated {
                needed: len,
                available,
                field: "chunk.payload",
            });
        }
        Ok(Chunk {
            header,
            fingerprint,
            payload: payload.slice(start..start + len),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Message, HEADER_LEN};

    #[test]
    fn the_largest_chunk_fits_the_frame_limit() {
        let limits = Limits {
            max_frame_len: 1000,
            ..Limits::default()
        };
        let chunk = Chunk {
            header: ChunkHeader {
                epoch: 1,
                comm: 2,
                seq: 3,
                algorithm: Algorithm::Ring,
                step: 4,
                offset: 5,
            },
            fingerprint: Some(Fingerprint {
                kind: CollectiveKind::AllReduce,
                dtype: DType::F32,
                op: ReduceOp::Sum,
                count: 6,
                root: 0,
                algorithm: Algorithm::Ring,
            }),
            payload: vec![9; Chunk::max_payload(&limits)].into(),
        };
        let message = Message::Chunk(chunk);
        assert_eq!(message.payload_len(), 1000);
        let frame = message.to_frame();
        assert_eq!(
            Message::decode(Kind::CHUNK, frame.slice(HEADER_LEN..), &limits),
            Ok(message)
        );
    }

    #[test]
    fn unknown_vocabulary_codes_name_the_field() {
        let mut payload = BytesMut::new();
        payload.put_slice(&[0; 24]);
        payload.put_u8(0xEE);
        payload.put_slice(&[0; 12]);
        payload.put_u8(0);
        payload.put_u32_le(0);
        assert_eq!(
            Message::decode(Kind::CHUNK, payload.freeze(), &Limits::default()),
            Err(DecodeError::BadField {
                field: "chunk.algorithm",
                reason: "unknown code",
                value: 0xEE
            })
        );
    }
}
