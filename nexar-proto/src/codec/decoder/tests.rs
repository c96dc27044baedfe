//! Tests of `FrameDecoder`, apart from it so the decoder's rules read on their own; as
//! a child module they still reach its private limits (`MIN_PIECE`, `MAX_PIECES`).

use proptest::prelude::*;

use super::*;
use crate::codec::strategies::arb_message;
use crate::codec::{fuzzing, Flags, Heartbeat, Kind, VERSION};

#[test]
fn a_four_gib_claim_is_refused_without_reserving() {
    let limits = Limits::default();
    let mut decoder = FrameDecoder::new(limits);
    let mut bytes = vec![b'N', b'X', VERSION, Kind::CHUNK.0, 0];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&vec![0u8; 1 << 20]);
    decoder.push(&bytes);
    let refused = DecodeError::TooLarge {
        len: u32::MAX.into(),
        limit: limits.max_frame_len.into(),
    };
    assert_eq!(decoder.poll_frame(), Err(refused.clone()));
    assert!(decoder.capacity() <= limits.max_frame_len as usize + HEADER_LEN);
    assert_eq!(decoder.capacity(), 0);
    assert_eq!(decoder.buffered(), 0);
    // Poisoned: later input is ignored and the error repeats.
    decoder.push(&Message::Heartbeat(Heartbeat { epoch: 1, seq: 1 }).to_frame());
    assert_eq!(decoder.poll_frame(), Err(refused.clone()));
    assert_eq!(decoder.poll_message(), Err(refused));
    assert!(decoder.is_poisoned());
}

#[test]
fn capacity_follows_bytes_received_not_bytes_claimed() {
    let limits = Limits {
        max_frame_len: u32::MAX,
        ..Limits::default()
    };
    let mut decoder = FrameDecoder::new(limits);
    let mut bytes = vec![b'N', b'X', VERSION, Kind::CHUNK.0, 0];
    bytes.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
    decoder.push(&bytes);
    assert_eq!(decoder.capacity(), 0);
    for _ in 0..100 {
        decoder.push(&[0u8; 1000]);
        assert!(
            decoder.capacity() <= 2 * decoder.partial_len(),
            "{}",
            decoder.capacity()
        );
    }
    assert_eq!(decoder.buffered(), HEADER_LEN + 100_000);
    assert_eq!(decoder.poll_frame(), Ok(None));
}

#[test]
fn errors_come_after_the_good_frames_before_them() {
    let good = Message::Heartbeat(Heartbeat { epoch: 1, seq: 2 });
    let mut stream = good.to_frame().to_vec();
    stream.extend_from_slice(b"XX garbage");
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&stream);
    assert_eq!(decoder.poll_message(), Ok(Some(good)));
    let bad = DecodeError::BadMagic { found: *b"XX" };
    assert_eq!(decoder.poll_message(), Err(bad.clone()));
    assert_eq!(decoder.poll_frame(), Err(bad));
}

#[test]
fn unknown_kinds_are_skipped_only_when_ignorable() {
    let hb = Message::Heartbeat(Heartbeat { epoch: 3, seq: 4 });
    let mut stream = BytesMut::new();
    Frame::new(Kind(0x7f), Flags::IGNORABLE, Bytes::from_static(b"future")).encode(&mut stream);
    hb.encode(&mut stream);
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&stream);
    assert_eq!(decoder.poll_message(), Ok(Some(hb.clone())));

    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&stream);
    let skipped = decoder.poll_frame().unwrap().unwrap();
    assert!(skipped.is_skippable());
    assert_eq!(&skipped.payload[..], b"future");
    assert_eq!(
        skipped.message(decoder.limits()),
        Err(DecodeError::UnknownKind { kind: 0x7f })
    );

    let mut stream = BytesMut::new();
    Frame::new(Kind(0x7f), Flags::NONE, Bytes::from_static(b"future")).encode(&mut stream);
    hb.encode(&mut stream);
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&stream);
    assert_eq!(
        decoder.poll_message(),
        Err(DecodeError::UnknownKind { kind: 0x7f })
    );
    assert_eq!(
        decoder.poll_message(),
        Err(DecodeError::UnknownKind { kind: 0x7f })
    );
}

#[test]
fn a_malformed_message_poisons_the_decoder() {
    let mut stream = BytesMut::new();
    Frame::new(Kind::HEARTBEAT, Flags::NONE, Bytes::from_static(&[1, 2, 3])).encode(&mut stream);
    Message::Heartbeat(Heartbeat { epoch: 1, seq: 1 }).encode(&mut stream);
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push(&stream);
    let error = decoder.poll_message().unwrap_err();
    assert!(matches!(
        error,
        DecodeError::Truncated {
            field: "heartbeat.epoch",
            ..
        }
    ));
    assert_eq!(decoder.poll_message(), Err(error));
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn push_bytes_slices_whole_payloads() {
    let frame = Message::Tagged(crate::codec::Tagged {
        epoch: 1,
        comm: 9,
        tag: 2,
        seq: 3,
        payload: Bytes::from(vec![5; 100]),
    })
    .to_frame();
    let mut decoder = FrameDecoder::new(Limits::default());
    decoder.push_bytes(frame.clone());
    let got = decoder.poll_frame().unwrap().unwrap();
    assert_eq!(got.payload.as_ptr(), frame[HEADER_LEN..].as_ptr());
}

/// A 256 KiB chunk frame pushed in slices of `slice` bytes, decoded; with the slices.
fn chunk_in_slices(slice: usize) -> (Message, Vec<Bytes>, FrameDecoder) {
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let message = Message::Chunk(crate::codec::Chunk {
        header: crate::codec::ChunkHeader {
            epoch: 1,
            comm: 2,
            seq: 3,
            algorithm: crate::codec::Algorithm::Ring,
            step: 4,
            offset: 5,
        },
        fingerprint: None,
        payload: payload.into(),
    });
    let frame = message.to_frame();
    let slices: Vec<Bytes> = (0..frame.len())
        .step_by(slice)
        .map(|at| frame.slice(at..(at + slice).min(frame.len())))
        .collect();
    let mut decoder = FrameDecoder::new(Limits::default());
    for s in &slices {
        decoder.push_bytes(s.clone());
        assert!(decoder.capacity() <= capacity_bound(decoder.partial_len()));
    }
    (message, slices, decoder)
}

#[test]
fn a_chunk_payload_stays_in_the_slices_it_came_in() {
    let (message, slices, mut decoder) = chunk_in_slices(65_000);
    let Some(Message::Chunk(got)) = decoder.poll_message().unwrap() else {
        panic!("a chunk was pushed");
    };
    assert_eq!(Message::Chunk(got.clone()), message);
    // Five slices: the first holds the fields, the rest are the pushed memory itself.
    assert_eq!(got.payload.parts().len(), 5);
    for (part, slice) in got.payload.parts()[1..].iter().zip(&slices[1..]) {
        assert_eq!(
            part.as_ptr(),
            slice.as_ptr(),
            "kept by reference, not copied"
        );
    }
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn a_chunk_in_many_small_slices_keeps_at_most_max_pieces() {
    let (message, _, mut decoder) = chunk_in_slices(4096);
    let got = decoder.poll_message().unwrap().unwrap();
    assert_eq!(got, message);
    let Message::Chunk(chunk) = got else {
        unreachable!()
    };
    // 15 slices kept by reference, the rest of the frame copied into a 16th piece.
    assert_eq!(chunk.payload.parts().len(), MAX_PIECES);
    let (message, _, mut decoder) = chunk_in_slices(MIN_PIECE - 1);
    assert_eq!(decoder.poll_message().unwrap().unwrap(), message);
}

/// A header with valid magic and version around random bytes: the kind is known or
/// not, the flags usually valid, and the length usually but not always the payload's.
fn arb_raw_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![3 => prop::sample::select(Kind::KNOWN).prop_map(|k| k.0), 1 => any::<u8>()],
        prop_oneof![4 => 0u8..=1, 1 => any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..300),
        prop_oneof![4 => Just(0i64), 1 => -4i64..4, 1 => Just(i64::from(u32::MAX))],
    )
        .prop_map(|(kind, flags, payload, skew)| {
            let len = (payload.len() as i64 + skew).clamp(0, i64::from(u32::MAX)) as u32;
            let mut frame = vec![b'N', b'X', VERSION, kind, flags];
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(&payload);
            frame
        })
}

fn stream_of(messages: &[Message]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in messages {
        m.encode(&mut out);
    }
    out.to_vec()
}

proptest! {
    #[test]
    fn any_split_decodes_like_the_whole(
        messages in prop::collection::vec(arb_message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        zero_copy in any::<bool>(),
    ) {
        let stream = stream_of(&messages);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut decoder = FrameDecoder::new(Limits::default());
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in cuts.into_iter().chain([stream.len()]) {
            if zero_copy {
                decoder.push_bytes(Bytes::copy_from_slice(&stream[start..end]));
            } else {
                decoder.push(&stream[start..end]);
            }
            start = end;
            prop_assert!(decoder.capacity() <= Limits::default().max_frame_len as usize);
            while let Some(m) = decoder.poll_message().unwrap() {
                decoded.push(m);
            }
        }
        prop_assert_eq!(decoded, messages);
        prop_assert_eq!(decoder.buffered(), 0);
        fuzzing::check_stream(&stream);
    }

    #[test]
    fn arbitrary_streams_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::check_stream(&data);
    }

    #[test]
    fn frame_shaped_noise_never_panics(frames in prop::collection::vec(arb_raw_frame(), 0..6)) {
        fuzzing::check_stream(&frames.concat());
    }

    #[test]
    fn mostly_valid_streams_never_panic(
        messages in prop::collection::vec(arb_message(), 1..4),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut stream = stream_of(&messages);
        for (at, byte) in flips {
            let at = at.index(stream.len());
            stream[at] = byte;
        }
        fuzzing::check_stream(&stream);
    }
}
