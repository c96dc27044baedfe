//! The scenarios, apart from the backends that run them: each is written once against
//! [`Backend`], so what a scenario checks reads in one place and holds for the simulator
//! and both drivers alike (`tests/tests/scenarios.rs` runs each on every backend).

use std::time::{Duration, Instant};

use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::OpError;

use super::{Backend, Exchange, Failure, Timeouts, RANKS};
use crate::collectives::Case;

/// Four ranks form: ranks 0..3, world size 4.
pub fn formation<B: Backend>() {
    let started = Instant::now();
    let b = B::form(RANKS, None).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    let want: Vec<(u32, u32)> = (0..RANKS).map(|r| (r, RANKS)).collect();
    assert_eq!(b.ranks(), want, "{}: ranks", B::NAME);
    eprintln!(
        "{}: formation of {RANKS} ranks: {:?}",
        B::NAME,
        started.elapsed()
    );
}

/// The cases of [`every_collective`]: every kind (`ReduceOp::None` where no reduction
/// applies), reductions with several ops, non-zero roots, a count below the world size (uneven blocks) and a larger one.
pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for count in [3usize, 1000] {
        let case = |kind, op, root| Case {
            kind,
            dtype: DType::I32,
            op,
            root,
            count,
        };
        cases.extend([
            case(CollectiveKind::AllReduce, ReduceOp::Sum, 0),
            case(CollectiveKind::AllReduce, ReduceOp::Max, 0),
            case(CollectiveKind::AllReduce, ReduceOp::Prod, 0),
            case(CollectiveKind::Broadcast, ReduceOp::None, 2),
            case(CollectiveKind::Reduce, ReduceOp::Sum, 1),
            case(CollectiveKind::Reduce, ReduceOp::Min, 3),
            case(CollectiveKind::AllGather, ReduceOp::None, 0),
            case(CollectiveKind::ReduceScatter, ReduceOp::Sum, 0),
            case(CollectiveKind::Gather, ReduceOp::None, 3),
            case(CollectiveKind::Scatter, ReduceOp::None, 1),
            case(CollectiveKind::AllToAll, ReduceOp::None, 0),
            case(CollectiveKind::Scan, ReduceOp::Sum, 0),
            case(CollectiveKind::ExclusiveScan, ReduceOp::Sum, 0),
            case(CollectiveKind::ExclusiveScan, ReduceOp::Max, 0),
            Case {
                count: 0,
                ..case(CollectiveKind::Barrier, ReduceOp::None, 0)
            },
        ]);
    }
    cases
}

/// Every collective kind on four ranks matches the sequential reference on every rank.
pub fn every_collective<B: Backend>() {
    let mut b = B::form(RANKS, None).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    let started = Instant::now();
    let mut errors = Vec::new();
    for case in all_cases() {
        let (results, _) = b.collective(&case);
        assert_eq!(results.len(), RANKS as usize, "{}: {case:?}", B::NAME);
        for (rank, result) in results.into_iter().enumerate() {
            let want = case.expected_output(rank as u32, RANKS);
            match result {
                Ok(got) if got == want => {}
                other => errors.push(format!(
                    "{case:?} rank {rank}: got {other:?}, want {want:?}"
                )),
            }
        }
    }
    assert!(errors.is_empty(), "{}: {errors:#?}", B::NAME);
    eprintln!("{}: every collective: {:?}", B::NAME, started.elapsed());
}

/// Each rank sends to its right neighbour on a tag and receives from its left one; the
/// payload names the sender. A second round on another tag follows the first.
pub fn send_recv<B: Backend>() {
    let mut b = B::form(RANKS, None).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    for tag in [7u64, 8] {
        let payload = |r: u32| format!("from rank {r} on tag {tag}").into_bytes();
        let plan: Vec<Exchange> = (0..RANKS)
            .map(|r| Exchange {
                to: (r + 1) % RANKS,
                from: (r + RANKS - 1) % RANKS,
                tag,
                data: payload(r),
            })
            .collect();
        let got = b.exchange(&plan);
        assert_eq!(got.len(), RANKS as usize, "{}", B::NAME);
        for (r, result) in got.into_iter().enumerate() {
            let left = (r as u32 + RANKS - 1) % RANKS;
            match result {
                Ok(data) => assert_eq!(data, payload(left), "{}: rank {r}", B::NAME),
                Err(e) => panic!("{}: rank {r}: {e:?}", B::NAME),
            }
        }
    }
}

/// A rank stops answering mid-run: the survivors' next all-reduce fails with a typed
/// error (`PeerLost` or `Timeout`) within the configured timeout plus a margin.
pub fn silent_rank<B: Backend>() {
    let timeouts = Timeouts {
        idle: Duration::from_secs(2),
        collective: Duration::from_secs(3),
    };
    let mut b =
        B::form(RANKS, Some(timeouts)).unwrap_or_else(|e| panic!("{}: formation: {e}", B::NAME));
    let sum = |count| Case {
        kind: CollectiveKind::AllReduce,
        dtype: DType::I32,
        op: ReduceOp::Sum,
        root: 0,
        count,
    };
    // One round together first, so the failure is mid-run, not at the start.
    let first = sum(16);
    let (results, _) = b.collective(&first);
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Ok(got) => assert_eq!(got, first.expected_output(rank as u32, RANKS)),
            Err(e) => panic!("{}: first round, rank {rank}: {e:?}", B::NAME),
        }
    }
    b.silence(RANKS - 1);
    let (results, elapsed) = b.collective(&sum(1 << 16));
    assert_eq!(results.len(), RANKS as usize - 1, "{}: survivors", B::NAME);
    for (rank, result) in results.into_iter().enumerate() {
        match result {
            Err(Failure::Op(OpError::PeerLost { .. } | OpError::Timeout { .. })) => {}
            other => panic!(
                "{}: rank {rank}: expected PeerLost or Timeout, got {other:?}",
                B::NAME
            ),
        }
    }
    let limit = timeouts.collective + Duration::from_secs(3);
    assert!(elapsed < limit, "{}: took {elapsed:?}", B::NAME);
    eprintln!(
        "{}: survivors failed with a typed error after {elapsed:?}",
        B::NAME
    );
}
