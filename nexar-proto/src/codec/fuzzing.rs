//! Property checks over arbitrary input, shared by the unit tests and the `fuzz/` targets.
//!
//! Each function accepts any bytes and panics only when a codec property is violated, so a
//! fuzzer finding a panic has found a bug, not merely an input the codec refused.

use bytes::{Bytes, BytesMut};

use super::decoder::capacity_bound;
use super::{DecodeError, Frame, FrameDecoder, Kind, Limits, Message, HEADER_LEN};

/// Small enough that fuzz inputs reach the frame-length limit.
const STREAM_LIMITS: Limits = Limits {
    max_frame_len: 4096,
    max_peers: 64,
    max_cert_len: 512,
};

/// Decodes `data` as the payload of a frame of kind `kind`; when it decodes, checks that
/// the message re-encodes canonically and round-trips.
///
/// Properties: the canonical encoding is exactly the prefix of `data` the decoder read
/// (every message has one encoding; extra bytes are ignored trailing fields); decoding the
/// canonical frame through a [`FrameDecoder`] gives the same message; re-encoding gives
/// identical bytes; `encode_prefix` plus the bulk equals `encode`.
pub fn check_message(kind: u8, data: &[u8]) {
    let limits = Limits::default();
    let Ok(message) = Message::decode(Kind(kind), Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    assert_eq!(message.kind(), Kind(kind));
    let frame = check_round_trip(&message, &limits);
    let body = &frame[HEADER_LEN..];
    assert!(
        body.len() <= data.len(),
        "canonical encoding is longer than its source"
    );
    assert_eq!(
        body,
        &data[..body.len()],
        "the decoder accepted a non-canonical encoding"
    );
}

/// Frames `data` whole and in pieces (split at positions derived from `data`, through
/// both `push` and `push_bytes`), and checks that every way yields the same frames, the
/// same messages (chunk payloads kept as the pushed slices included) and the same final
/// error; that every frame re-encodes to the bytes it came from; that the decoder's
/// reserved capacity stays within its bound; and that every frame that decodes as a
/// message round-trips.
pub fn check_stream(data: &[u8]) {
    let whole = run(data, &[data.len()], false);
    let seed: Vec<usize> = data.iter().map(|&b| usize::from(b % 31) + 1).collect();
    let split = run(data, &seed, false);
    let sliced = run(data, &seed, true);
    assert_eq!(split, whole, "splitting the stream changed the frames");
    assert_eq!(sliced, whole, "push_bytes and push disagree");
    assert_eq!(
        messages(data, &seed),
        messages(data, &[data.len()]),
        "messages decoded from slices differ from the whole stream's"
    );
    if data.len() <= 1024 {
        assert_eq!(
            run(data, &[1], false),
            whole,
            "byte-by-byte feeding changed the frames"
        );
    }

    let mut offset = 0;
    for frame in &whole.frames {
        let mut encoded = BytesMut::new();
        frame.encode(&mut encoded);
        assert_eq!(
            &encoded[..],
            &data[offset..offset + encoded.len()],
            "framing is not canonical"
        );
        offset += encoded.len();
        if frame.is_skippable() {
            continue;
        }
        if let Ok(message) = frame.message(&STREAM_LIMITS) {
            check_round_trip(&message, &STREAM_LIMITS);
        }
    }
    if whole.error.is_none() {
        assert_eq!(offset + whole.leftover, data.len(), "bytes went missing");
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    leftover: usize,
}

/// A decoder that keeps chunk slices of any length, at most 4 per frame, so that short
/// fuzz inputs reach the kept, the copied and the mixed paths.
fn slicing_decoder() -> FrameDecoder {
    FrameDecoder::with_piece_policy(STREAM_LIMITS, 1, 4)
}

/// Feeds `data` through `push_bytes` in pieces whose lengths cycle through `sizes`, and
/// collects the messages (unknown ignorable kinds skipped) up to the first error.
fn messages(data: &[u8], sizes: &[usize]) -> (Vec<Message>, Option<DecodeError>) {
    let mut decoder = slicing_decoder();
    let mut out = Vec::new();
    let mut start = 0;
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0).cycle();
    while start < data.len() {
        let end = sizes
            .next()
            .map_or(data.len(), |s| start.saturating_add(s).min(data.len()));
        decoder.push_bytes(Bytes::copy_from_slice(&data[start..end]));
        start = end;
        loop {
            match decoder.poll_message() {
                Ok(Some(message)) => out.push(message),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Feeds `data` in pieces whose lengths cycle through `sizes`, polling after each push.
fn run(data: &[u8], sizes: &[usize], zero_copy: bool) -> Outcome {
    let mut decoder = match zero_copy {
        true => slicing_decoder(),
        false => FrameDecoder::new(STREAM_LIMITS),
    };
    let mut frames = Vec::new();
    let mut error = None;
    let mut start = 0;
    let mut sizes = sizes.iter().copied().filter(|&s| s > 0).cycle();
    while start < data.len() && error.is_none() {
        let end = sizes
            .next()
            .map_or(data.len(), |s| start.saturating_add(s).min(data.len()));
        if zero_copy {
            decoder.push_bytes(Bytes::copy_from_slice(&data[start..end]));
        } else {
            decoder.push(&data[start..end]);
        }
        start = end;
        assert!(
            decoder.capacity() <= capacity_bound(decoder.partial_len()),
            "capacity {} for {} buffered payload bytes",
            decoder.capacity(),
            decoder.partial_len()
        );
        assert!(decoder.capacity() <= STREAM_LIMITS.max_frame_len as usize);
        loop {
            match decoder.poll_frame() {
                Ok(Some(frame)) => {
                    assert_eq!(frame.payload.len(), frame.header.len as usize);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(
                        decoder.poll_frame(),
                        Err(e.clone()),
                        "errors must be sticky"
                    );
                    error = Some(e);
                    break;
                }
            }
        }
    }
    let leftover = if error.is_some() {
        0
    } else {
        decoder.buffered()
    };
    Outcome {
        frames,
        error,
        leftover,
    }
}

/// Encodes `message` every way and checks the results agree; returns the frame.
fn check_round_trip(message: &Message, limits: &Limits) -> Bytes {
    let frame = message.to_frame();
    assert_eq!(frame.len(), message.encoded_len());
    assert_eq!(frame.len(), HEADER_LEN + message.payload_len());

    let mut prefixed = BytesMut::new();
    let bulk = message.encode_prefix(&mut prefixed);
    prefixed.extend_from_slice(&bulk.to_bytes());
    assert_eq!(prefixed, frame, "encode_prefix + bulk differs from encode");

    let mut decoder = FrameDecoder::new(*limits);
    decoder.push(&frame);
    let again = decoder
        .poll_message()
        .expect("a canonical re-encoding must decode")
        .expect("a whole frame was pushed");
    assert_eq!(&again, message, "decode(encode(m)) != m");
    assert_eq!(again.to_frame(), frame, "re-encoding is not stable");
    assert_eq!(decoder.poll_frame(), Ok(None));
    frame
}
