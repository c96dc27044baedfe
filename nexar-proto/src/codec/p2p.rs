//! Point-to-point messages: tagged data, RPC, and relaying through a third node.

use bytes::{BufMut, Bytes, BytesMut};

use super::message::{Body, WireMessage};
use super::wire::{self, Reader};
use super::{DecodeError, Kind, Limits};

/// Tagged point-to-point data, matched by the receiver on `(sender, comm, tag, seq)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// Epoch the send was issued in; data from an older epoch is dropped.
    pub epoch: u64,
    /// The communicator the message belongs to (`CommId::WORLD`'s 0, or a split one's
    /// id): messages of one tag on different communicators never match each other.
    pub comm: u64,
    /// User tag.
    pub tag: u64,
    /// Per-(peer, tag) sequence number, so that messages with one tag match in order.
    pub seq: u64,
    /// The data; the bulk field.
    pub payload: Bytes,
}

impl Body for Tagged {
    fn body_len(&self) -> usize {
        8 + 8 + 8 + 8 + wire::bytes_len(&self.payload)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u64_le(self.comm);
        out.put_u64_le(self.tag);
        out.put_u64_le(self.seq);
        wire::put_len(out, self.payload.len());
    }

    fn bulk(&self) -> &[Bytes] {
        std::slice::from_ref(&self.payload)
    }
}

impl WireMessage for Tagged {
    const KIND: Kind = Kind::TAGGED;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Tagged {
            epoch: r.u64("tagged.epoch")?,
            comm: r.u64("tagged.comm")?,
            tag: r.u64("tagged.tag")?,
            seq: r.u64("tagged.seq")?,
            payload: r.bytes("tagged.payload", u32::MAX)?,
        })
    }
}

/// Opens a tagged message too large for one [`Tagged`] frame: its (comm, tag, seq) take
/// their place in the matching order here, and its bytes follow in [`TaggedPart`]s.
///
/// The receiver checks `total` against its configured maximum before it allocates
/// anything, and allocates the message only once a receive has claimed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedStart {
    /// Epoch the send was issued in; as for [`Tagged`].
    pub epoch: u64,
    /// The communicator the message belongs to; as for [`Tagged`].
    pub comm: u64,
    /// User tag.
    pub tag: u64,
    /// Per-(peer, comm, tag) sequence number, shared with [`Tagged`].
    pub seq: u64,
    /// Length of the whole message in bytes.
    pub total: u64,
}

impl Body for TaggedStart {
    fn body_len(&self) -> usize {
        8 + 8 + 8 + 8 + 8
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u64_le(self.comm);
        out.put_u64_le(self.tag);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.total);
    }
}

impl WireMessage for TaggedStart {
    const KIND: Kind = Kind::TAGGED_START;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(TaggedStart {
            epoch: r.u64("tagged_start.epoch")?,
            comm: r.u64("tagged_start.comm")?,
            tag: r.u64("tagged_start.tag")?,
            seq: r.u64("tagged_start.seq")?,
            total: r.u64("tagged_start.total")?,
        })
    }
}

/// The bytes at `offset` of the message a [`TaggedStart`] opened. Parts of one message
/// arrive in order and back to back; parts of different messages may interleave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedPart {
    /// The sender's epoch when it encoded this part.
    pub epoch: u64,
    /// The message's communicator.
    pub comm: u64,
    /// The message's tag.
    pub tag: u64,
    /// The message's sequence number.
    pub seq: u64,
    /// Where in the message `payload` goes.
    pub offset: u64,
    /// The bytes; the bulk field.
    pub payload: Bytes,
}

impl TaggedPart {
    /// Bytes of a part's payload before its data: epoch, comm, tag, seq, offset, length.
    pub const OVERHEAD: usize = 8 + 8 + 8 + 8 + 8 + 4;
}

impl Body for TaggedPart {
    fn body_len(&self) -> usize {
        8 + 8 + 8 + 8 + 8 + wire::bytes_len(&self.payload)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.epoch);
        out.put_u64_le(self.comm);
        out.put_u64_le(self.tag);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.offset);
        wire::put_len(out, self.payload.len());
    }

    fn bulk(&self) -> &[Bytes] {
        std::slice::from_ref(&self.payload)
    }
}

impl WireMessage for TaggedPart {
    const KIND: Kind = Kind::TAGGED_PART;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(TaggedPart {
            epoch: r.u64("tagged_part.epoch")?,
            comm: r.u64("tagged_part.comm")?,
            tag: r.u64("tagged_part.tag")?,
            seq: r.u64("tagged_part.seq")?,
            offset: r.u64("tagged_part.offset")?,
            payload: r.bytes("tagged_part.payload", u32::MAX)?,
        })
    }
}

/// A remote call of a function registered under `fn_id` on the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcRequest {
    /// Caller-chosen id echoed in the response.
    pub id: u64,
    /// Which registered function to run.
    pub fn_id: u32,
    /// Arguments, opaque to nexar; the bulk field.
    pub payload: Bytes,
}

impl Body for RpcRequest {
    fn body_len(&self) -> usize {
        8 + 4 + wire::bytes_len(&self.payload)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.id);
        out.put_u32_le(self.fn_id);
        wire::put_len(out, self.payload.len());
    }

    fn bulk(&self) -> &[Bytes] {
        std::slice::from_ref(&self.payload)
    }
}

impl WireMessage for RpcRequest {
    const KIND: Kind = Kind::RPC_REQUEST;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(RpcRequest {
            id: r.u64("rpc_request.id")?,
            fn_id: r.u32("rpc_request.fn_id")?,
            payload: r.bytes("rpc_request.payload", u32::MAX)?,
        })
    }
}

code_enum! {
    /// Outcome of an RPC, so that a caller can tell a missing function from a failing one.
    #[non_exhaustive]
    pub enum RpcStatus {
        /// The function ran; the payload is its result.
        Ok = 0,
        /// No function is registered under the requested id.
        UnknownFunction = 1,
        /// The function ran and failed; the payload is its error.
        HandlerError = 2,
        /// The request could not be parsed by the handler.
        BadRequest = 3,
        /// The receiver refused the call for lack of capacity; retrying later may work.
        Overloaded = 4,
        /// The receiver no longer serves calls: it is shutting down, or its cluster
        /// aborted after a failure (the abort policy).
        ShuttingDown = 5,
    }
}

/// The answer to an [`RpcRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcResponse {
    /// The request's id.
    pub id: u64,
    /// Outcome.
    pub status: RpcStatus,
    /// Result or error, opaque to nexar; the bulk field.
    pub payload: Bytes,
}

impl Body for RpcResponse {
    fn body_len(&self) -> usize {
        8 + 1 + wire::bytes_len(&self.payload)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u64_le(self.id);
        out.put_u8(self.status.code());
        wire::put_len(out, self.payload.len());
    }

    fn bulk(&self) -> &[Bytes] {
        std::slice::from_ref(&self.payload)
    }
}

impl WireMessage for RpcResponse {
    const KIND: Kind = Kind::RPC_RESPONSE;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(RpcResponse {
            id: r.u64("rpc_response.id")?,
            status: r.code("rpc_response.status")?,
            payload: r.bytes("rpc_response.payload", u32::MAX)?,
        })
    }
}

/// A frame forwarded on behalf of `from` to `to` when they have no direct connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Originating rank.
    pub from: u32,
    /// Destination rank.
    pub to: u32,
    /// The forwarded frame (header included), decoded by the destination with its own
    /// limits; opaque to the relaying node. The bulk field.
    pub inner: Bytes,
}

impl Body for Relay {
    fn body_len(&self) -> usize {
        4 + 4 + wire::bytes_len(&self.inner)
    }

    fn encode_fields(&self, out: &mut BytesMut) {
        out.put_u32_le(self.from);
        out.put_u32_le(self.to);
        wire::put_len(out, self.inner.len());
    }

    fn bulk(&self) -> &[Bytes] {
        std::slice::from_ref(&self.inner)
    }
}

impl WireMessage for Relay {
    const KIND: Kind = Kind::RELAY;

    fn decode_body(r: &mut Reader, _limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Relay {
            from: r.u32("relay.from")?,
            to: r.u32("relay.to")?,
            inner: r.bytes("relay.inner", u32::MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Message, HEADER_LEN};

    #[test]
    fn encode_prefix_leaves_the_bulk_out() {
        let payload = Bytes::from(vec![7u8; 4096]);
        let message = Message::RpcRequest(RpcRequest {
            id: 1,
            fn_id: 2,
            payload: payload.clone(),
        });
        let mut prefix = BytesMut::new();
        let bulk = message.encode_prefix(&mut prefix);
        assert_eq!(prefix.len(), HEADER_LEN + 8 + 4 + 4);
        assert_eq!(
            bulk.parts()[0].as_ptr(),
            payload.as_ptr(),
            "the bulk is the caller's buffer, not a copy"
        );
        prefix.extend_from_slice(&bulk.to_bytes());
        assert_eq!(prefix.freeze(), message.to_frame());
    }

    #[test]
    fn tagged_start_and_part_layouts_are_pinned() {
        let start = Message::TaggedStart(TaggedStart {
            epoch: 1,
            comm: 0x0607,
            tag: 0x0203,
            seq: 4,
            total: 0x0500_0000,
        });
        let mut want = vec![b'N', b'X', 2, 0x25, 0, 40, 0, 0, 0];
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[7, 6, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[3, 2, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(&start.to_frame()[..], &want[..]);

        let part = Message::TaggedPart(TaggedPart {
            epoch: 1,
            comm: 9,
            tag: 2,
            seq: 3,
            offset: 0x0100_0000,
            payload: Bytes::from_static(b"ab"),
        });
        let mut want = vec![b'N', b'X', 2, 0x26, 0, 46, 0, 0, 0];
        for field in [1u8, 9, 2, 3] {
            want.extend_from_slice(&[field, 0, 0, 0, 0, 0, 0, 0]);
        }
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        want.extend_from_slice(&[2, 0, 0, 0, b'a', b'b']);
        assert_eq!(&part.to_frame()[..], &want[..]);
        assert_eq!(part.payload_len(), TaggedPart::OVERHEAD + 2);
    }

    #[test]
    fn unknown_rpc_status_is_an_error() {
        let mut payload = BytesMut::new();
        payload.put_u64_le(1);
        payload.put_u8(200);
        payload.put_u32_le(0);
        assert_eq!(
            Message::decode(Kind::RPC_RESPONSE, payload.freeze(), &Limits::default()),
            Err(DecodeError::BadField {
                field: "rpc_response.status",
                reason: "unknown code",
                value: 200
            })
        );
    }
}
