//! Matching, sequencing, messages in parts and their budget, per communicator.

use super::*;

#[test]
fn matches_in_order_per_source_and_tag() {
    let mut p = P2p::new(1 << 20);
    assert_eq!(
        p.on_arrival((1, 0, 7), 0, Bytes::from_static(b"a")),
        Ok(None)
    );
    assert_eq!(
        p.on_arrival((1, 0, 7), 1, Bytes::from_static(b"b")),
        Ok(None)
    );
    assert_eq!(p.unmatched_bytes(1), 2 + 2 * UNMATCHED_OVERHEAD);
    let first = p.post(OpId(1), (1, 0, 7), 1).unwrap();
    assert!(
        matches!(first, Event::Completed { outcome: Ok(Outcome::Received { ref data, .. }), .. } if data == "a")
    );
    assert!(p.post(OpId(2), (1, 0, 8), 1).is_none());
    let later = p
        .on_arrival((1, 0, 8), 0, Bytes::from_static(b"c"))
        .unwrap()
        .unwrap();
    assert!(matches!(later, Event::Completed { op: OpId(2), .. }));
    assert_eq!(p.unmatched_bytes(1), 1 + UNMATCHED_OVERHEAD);
}

#[test]
fn gaps_and_repeats_are_refused() {
    let mut p = P2p::new(1 << 20);
    assert!(p.on_arrival((0, 0, 1), 0, Bytes::new()).is_ok());
    assert_eq!(
        p.on_arrival((0, 0, 1), 0, Bytes::new()),
        Err(ArrivalError::OutOfSequence {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        p.on_arrival((0, 0, 1), 5, Bytes::new()),
        Err(ArrivalError::OutOfSequence {
            expected: 1,
            got: 5
        })
    );
}

#[test]
fn messages_in_parts_are_charged_until_claimed_and_released_when_lost() {
    let mut p = P2p::new(10);
    assert_eq!(
        p.on_start((1, 0, 7), 0, 11),
        Err(ArrivalError::TooLong { len: 11, limit: 10 })
    );
    assert_eq!(
        p.on_start((1, 0, 7), 0, u64::MAX),
        Err(ArrivalError::TooLong {
            len: u64::MAX,
            limit: 10
        })
    );
    assert_eq!(p.unmatched_bytes(1), 0, "a refused length costs nothing");
    assert_eq!(p.on_start((1, 0, 7), 0, 10), Ok(None));
    assert_eq!(
        p.on_part((1, 0, 7), 0, 0, Bytes::from_static(b"0123")),
        Ok(None)
    );
    assert_eq!(p.unmatched_bytes(1), UNMATCHED_OVERHEAD + 4);
    // A whole message behind it on the same tag waits its turn.
    assert_eq!(
        p.on_arrival((1, 0, 7), 1, Bytes::from_static(b"w")),
        Ok(None)
    );
    assert!(
        p.post(OpId(1), (1, 0, 7), 1).is_none(),
        "claimed, not complete"
    );
    assert_eq!(p.unmatched_bytes(1), UNMATCHED_OVERHEAD + 1);
    let done = p.on_part((1, 0, 7), 0, 4, Bytes::from_static(b"456789"));
    assert!(
        matches!(done, Ok(Some(Event::Completed { op: OpId(1), outcome: Ok(Outcome::Received { ref data, .. }) })) if data == "0123456789")
    );
    assert!(matches!(
        p.post(OpId(2), (1, 0, 7), 1),
        Some(Event::Completed { op: OpId(2), .. })
    ));
    assert_eq!(
        p.on_part((1, 0, 7), 0, 10, Bytes::from_static(b"x")),
        Err(ArrivalError::NoSuchMessage { tag: 7, seq: 0 })
    );

    // Lost mid-message: the claimed receive fails, the unclaimed bytes are released.
    assert_eq!(p.on_start((2, 0, 1), 0, 8), Ok(None));
    assert_eq!(p.on_start((2, 0, 2), 0, 8), Ok(None));
    assert!(p.post(OpId(3), (2, 0, 1), 2).is_none());
    assert_eq!(
        p.on_part((2, 0, 2), 0, 0, Bytes::from_static(b"ab")),
        Ok(None)
    );
    assert_eq!(p.unmatched_bytes(2), UNMATCHED_OVERHEAD + 2);
    assert_eq!(p.take_posted_from(2), vec![OpId(3)]);
    assert_eq!(p.unmatched_bytes(2), 0);
    let late = p.post(OpId(4), (2, 0, 2), 2);
    assert!(matches!(
        late,
        Some(Event::Completed {
            op: OpId(4),
            outcome: Err(OpError::PeerLost { rank: 2 })
        })
    ));
}

#[test]
fn communicators_do_not_share_a_tag() {
    let mut p = P2p::new(1 << 20);
    // Same peer (world rank 2), same tag 5: one message on the world, one on comm 77.
    assert_eq!(
        p.on_arrival((2, 77, 5), 0, Bytes::from_static(b"sub")),
        Ok(None)
    );
    assert_eq!(
        p.on_arrival((2, 0, 5), 0, Bytes::from_static(b"world")),
        Ok(None)
    );
    let world = p.post(OpId(1), (2, 0, 5), 2).unwrap();
    assert!(
        matches!(world, Event::Completed { op: OpId(1), outcome: Ok(Outcome::Received { from: 2, ref data, .. }) } if data == "world")
    );
    // The split receive reports the sender's rank in the split communicator.
    let sub = p.post(OpId(2), (2, 77, 5), 0).unwrap();
    assert!(
        matches!(sub, Event::Completed { op: OpId(2), outcome: Ok(Outcome::Received { from: 0, ref data, .. }) } if data == "sub")
    );
    // Sequence numbers are per communicator: both started at 0 above.
    assert_eq!(p.peek_seq((3, 77, 5)), 0);
    assert_eq!(p.next_seq((3, 77, 5)), 0);
    assert_eq!(p.peek_seq((3, 0, 5)), 0);
}

#[test]
fn dropping_split_comms_keeps_the_world() {
    let mut p = P2p::new(1 << 20);
    p.on_arrival((1, 9, 3), 0, Bytes::from_static(b"gone"))
        .unwrap();
    p.on_arrival((1, 0, 3), 0, Bytes::from_static(b"kept"))
        .unwrap();
    assert!(p.post(OpId(4), (2, 9, 3), 0).is_none());
    assert!(p.post(OpId(5), (2, 0, 3), 2).is_none());
    p.next_seq((2, 9, 3));
    p.next_seq((2, 0, 3));
    assert_eq!(p.drop_split_comms(), vec![OpId(4)]);
    assert_eq!(p.unmatched_bytes(1), 4 + UNMATCHED_OVERHEAD);
    assert_eq!(p.peek_seq((2, 9, 3)), 0);
    assert_eq!(p.peek_seq((2, 0, 3)), 1);
    // The split comm's receive state is gone too: sequence 0 is expected again.
    assert!(p.on_arrival((1, 9, 3), 0, Bytes::new()).is_ok());
    assert_eq!(p.take_all_posted(), vec![OpId(5)]);
}

#[test]
fn messages_in_parts_match_per_communicator() {
    let mut p = P2p::new(1 << 20);
    // Peer 2 opens a message in parts on comm 77 and one on the world, same tag 5.
    assert_eq!(p.on_start((2, 77, 5), 0, 3), Ok(None));
    assert_eq!(p.on_start((2, 0, 5), 0, 2), Ok(None));
    assert!(p.is_arriving((2, 77, 5), 0));
    assert!(!p.is_arriving((2, 78, 5), 0));
    // A part keyed to another communicator belongs to no message.
    assert_eq!(
        p.on_part((2, 78, 5), 0, 0, Bytes::from_static(b"x")),
        Err(ArrivalError::NoSuchMessage { tag: 5, seq: 0 })
    );
    assert_eq!(
        p.on_part((2, 0, 5), 0, 0, Bytes::from_static(b"wo")),
        Ok(None)
    );
    // The split receive claims the split message only, and reports rank 1 of comm 77.
    assert!(p.post(OpId(1), (2, 77, 5), 1).is_none());
    let done = p.on_part((2, 77, 5), 0, 0, Bytes::from_static(b"sub"));
    assert!(
        matches!(done, Ok(Some(Event::Completed { op: OpId(1), outcome: Ok(Outcome::Received { from: 1, tag: 5, ref data }) })) if data == "sub")
    );
    let world = p.post(OpId(2), (2, 0, 5), 2);
    assert!(
        matches!(world, Some(Event::Completed { op: OpId(2), outcome: Ok(Outcome::Received { from: 2, ref data, .. }) }) if data == "wo")
    );
    assert_eq!(p.unmatched_bytes(2), 0);
}

#[test]
fn dropping_split_comms_drops_their_messages_in_parts() {
    let mut p = P2p::new(1 << 20);
    // Unclaimed on comm 9 (charged), claimed on comm 9, and one on the world.
    assert_eq!(p.on_start((1, 9, 3), 0, 8), Ok(None));
    assert_eq!(
        p.on_part((1, 9, 3), 0, 0, Bytes::from_static(b"abc")),
        Ok(None)
    );
    assert_eq!(p.on_start((1, 9, 4), 0, 8), Ok(None));
    assert!(p.post(OpId(7), (1, 9, 4), 0).is_none());
    assert_eq!(p.on_start((1, 0, 3), 0, 8), Ok(None));
    assert_eq!(p.unmatched_bytes(1), 2 * UNMATCHED_OVERHEAD + 3);
    p.outbox
        .push(OpId(8), (2, 9, 1), 0, 0, Bytes::from(vec![0u8; 4]));
    p.outbox
        .push(OpId(9), (2, 0, 1), 0, 0, Bytes::from(vec![0u8; 4]));
    let mut dropped = p.drop_split_comms();
    dropped.sort();
    assert_eq!(dropped, vec![OpId(7), OpId(8)]);
    // Only the world's message is still charged and still arriving.
    assert_eq!(p.unmatched_bytes(1), UNMATCHED_OVERHEAD);
    assert!(!p.is_arriving((1, 9, 3), 0));
    assert!(!p.is_arriving((1, 9, 4), 0));
    assert!(p.is_arriving((1, 0, 3), 0));
    assert_eq!(p.take_all_posted(), vec![OpId(9)]);
}
