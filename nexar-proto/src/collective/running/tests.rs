//! Unit tests of `Running`, kept apart so the executor's per-operation state machine
//! reads on its own; they reach its private fields (the outbox) as a child module.

use super::*;
use crate::codec::{Algorithm, CollectiveKind, DType};
use crate::collective::plan::{Recv, Step, Transfer};

/// A 4-element f32 sum over `steps` (segments of 2 elements), rank 0 of 2, not begun.
fn running(algorithm: Algorithm, steps: Vec<Step>, values: Vec<f32>) -> Running {
    let spec = CollectiveSpec {
        kind: CollectiveKind::AllReduce,
        dtype: DType::F32,
        op: ReduceOp::Sum,
        count: 4,
        root: 0,
    };
    let fp = spec.fingerprint(algorithm);
    let plan = Plan {
        algorithm,
        buffer_len: 4,
        steps,
    };
    let layout = Layout {
        buffer_len: 4,
        input: 0..4,
        output: 0..4,
        fill_identity: 0..0,
    };
    let buf = Buffer::from_vec(values);
    Running::new(spec, fp, 0, 0, 1, Arc::new(plan), layout, buf, 2, 0)
}

fn recv_all(reduce: bool) -> Recv {
    Recv {
        peer: 1,
        range: 0..4,
        reduce,
    }
}

/// Two steps, each receiving 4 elements from rank 1 in segments of 2; begun.
fn op() -> Running {
    let step = Step {
        sends: Vec::new(),
        recvs: vec![recv_all(true)],
        locals: Vec::new(),
    };
    let mut r = running(Algorithm::Ring, vec![step.clone(), step], vec![0f32; 4]);
    r.begin(&mut Vec::new());
    r
}

fn chunk(step: u32, offset: u64, len: usize, fp: Option<Fingerprint>) -> InChunk {
    InChunk {
        from: 1,
        step,
        offset,
        fingerprint: fp,
        payload: vec![0u8; len * 4].into(),
    }
}

#[test]
fn a_reduced_chunk_the_next_step_forwards_is_encoded_as_it_lands() {
    // Step 0 reduces 0..4 from rank 1 (two chunks); step 1 sends 0..4 back on.
    let reduce = Step {
        sends: Vec::new(),
        recvs: vec![recv_all(true)],
        locals: Vec::new(),
    };
    let forward = Step {
        sends: vec![Transfer {
            peer: 1,
            range: 0..4,
        }],
        recvs: Vec::new(),
        locals: Vec::new(),
    };
    let mut r = running(
        Algorithm::Ring,
        vec![reduce, forward],
        vec![1.0, 2.0, 3.0, 4.0],
    );
    r.begin(&mut Vec::new());
    let fp = Some(r.fp);
    let le = |v: &[f32]| -> Pieces {
        v.iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    };
    let mut out = Vec::new();
    let first = InChunk {
        payload: le(&[10.0, 20.0]),
        ..chunk(0, 0, 2, fp)
    };
    r.on_chunk(first, &mut out).unwrap();
    assert_eq!(
        r.outbox.kept(),
        vec![0..2],
        "encoded while step 0 still runs"
    );
    let second = InChunk {
        payload: le(&[30.0, 40.0]),
        ..chunk(0, 2, 2, None)
    };
    r.on_chunk(second, &mut out).unwrap();
    r.take_sends(&mut |_, _| true, &mut out);
    let sent: Vec<Pieces> = out.into_iter().map(|c| c.payload).collect();
    assert_eq!(sent, vec![le(&[11.0, 22.0]), le(&[33.0, 44.0])]);
    assert!(r.is_done());
}

#[test]
fn a_peer_cannot_make_us_hold_more_than_the_plan() {
    let mut r = op();
    let fp = Some(r.fp);
    let mut out = Vec::new();
    // Step 1 is in the future: two chunks are allowed, a third is a violation.
    assert!(r.on_chunk(chunk(1, 0, 2, fp), &mut out).is_ok());
    assert!(r.on_chunk(chunk(1, 2, 2, None), &mut out).is_ok());
    assert!(matches!(
        r.on_chunk(chunk(1, 4, 2, None), &mut out),
        Err(Violation::Protocol { .. })
    ));
    // An oversized chunk is refused before it is stored.
    let mut r = op();
    assert!(matches!(
        r.on_chunk(chunk(0, 0, 3, fp), &mut out),
        Err(Violation::Protocol { .. })
    ));
}

#[test]
fn chunks_must_follow_the_plan() {
    let mut r = op();
    let fp = r.fp;
    let mut out = Vec::new();
    let mut other = fp;
    other.count = 5;
    assert!(matches!(
        r.on_chunk(chunk(0, 0, 2, Some(other)), &mut out),
        Err(Violation::Mismatch { .. })
    ));
    let mut r = op();
    assert!(matches!(
        r.on_chunk(chunk(0, 0, 2, None), &mut out),
        Err(Violation::Protocol { .. })
    ));
    let mut r = op();
    assert!(matches!(
        r.on_chunk(chunk(7, 0, 2, Some(fp)), &mut out),
        Err(Violation::Protocol { .. })
    ));
    let mut r = op();
    assert!(r.on_chunk(chunk(0, 0, 2, Some(fp)), &mut out).is_ok());
    assert!(
        matches!(
            r.on_chunk(chunk(0, 0, 2, None), &mut out),
            Err(Violation::Protocol { .. })
        ),
        "wrong offset"
    );
    let mut r = op();
    for (step, offset) in [(0, 0), (0, 2), (1, 0), (1, 2)] {
        let fp = (step == 0 && offset == 0).then_some(fp);
        assert!(r.on_chunk(chunk(step, offset, 2, fp), &mut out).is_ok());
    }
    assert!(r.is_done());
}

/// One recursive-doubling step: send 0..4 to rank 1 and reduce rank 1's 0..4 into it.
fn exchange(values: Vec<f32>) -> Running {
    let step = Step {
        sends: vec![crate::collective::plan::Transfer {
            peer: 1,
            range: 0..4,
        }],
        recvs: vec![recv_all(true)],
        locals: Vec::new(),
    };
    running(Algorithm::RecursiveDoubling, vec![step], values)
}

fn floats(b: &Pieces) -> Vec<f32> {
    b.to_vec()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn deferred_sends_wait_for_room_and_keep_their_order() {
    let mut r = exchange(vec![1.0, 2.0, 3.0, 4.0]);
    let mut out = Vec::new();
    r.begin(&mut out);
    assert!(out.is_empty(), "nothing is encoded before there is room");
    assert!(r.has_deferred());
    // Room for one segment: the first goes, the second waits behind it.
    let mut room = 8usize;
    r.take_sends(
        &mut |_, bytes| {
            let ok = room > 0;
            room = room.saturating_sub(bytes);
            ok
        },
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].header.offset, 0);
    assert_eq!(floats(&out[0].payload), vec![1.0, 2.0]);
    r.take_sends(&mut |_, _| true, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].header.offset, 2);
    assert!(!r.has_deferred());
}

#[test]
fn a_receive_into_a_deferred_range_encodes_the_old_data_first() {
    let mut r = exchange(vec![1.0, 2.0, 3.0, 4.0]);
    let fp = Some(r.fp);
    let mut out = Vec::new();
    r.begin(&mut out);
    // The peer's first segment arrives while no room was ever offered: our sends
    // must carry our data as it was before the reduction, not the sum.
    let payload: Vec<u8> = [10f32, 20.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let first = InChunk {
        payload: payload.into(),
        ..chunk(0, 0, 2, fp)
    };
    assert!(r.on_chunk(first, &mut out).is_ok());
    let sent: Vec<f32> = out.iter().flat_map(|c| floats(&c.payload)).collect();
    assert_eq!(sent, vec![1.0, 2.0, 3.0, 4.0]);
    assert!(!r.has_deferred());
}
