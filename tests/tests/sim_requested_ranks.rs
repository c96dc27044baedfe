//! Workers that ask for ranks: they get them, a taken rank and an out-of-range rank are
//! refused with their own reasons, and the rest fill the free ranks.

use std::time::Duration;

use nexar_proto::codec::RejectReason;
use nexar_proto::sim::{ClusterSim, HostId};
use nexar_proto::{Event, JoinError};
use nexar_tests::support::{check_formed, lan, FORMATION_LIMIT};

fn rejected(c: &ClusterSim, w: HostId) -> Option<RejectReason> {
    match c.events(w) {
        [Event::JoinFailed {
            error: JoinError::Rejected { reason },
        }] => Some(*reason),
        _ => None,
    }
}

/// Every worker names its rank (a permutation): each gets exactly the one it asked for.
#[test]
fn requested_ranks_are_granted() {
    let wanted = [2, 0, 3, 1];
    let mut c = ClusterSim::new(31, 4, lan());
    for r in wanted {
        c.add_worker(|config| config.with_requested_rank(Some(r)));
    }
    let workers = c.workers.clone();
    assert!(c.run_until_ready(&workers, FORMATION_LIMIT));
    check_formed(&c, &workers).unwrap();
    for (w, r) in workers.iter().zip(wanted) {
        assert_eq!(c.ready(*w).unwrap().0, r, "{w} asked for rank {r}");
    }
}

/// World of 4: A asks for 3, C for 1, F for 7 (out of range); later B asks for 3 again
/// (taken); then D and E ask for nothing and take the free ranks 0 and 2.
#[test]
fn taken_and_out_of_range_requests_are_refused() {
    let mut c = ClusterSim::new(32, 4, lan());
    let a = c.add_worker(|config| config.with_requested_rank(Some(3)));
    let cc = c.add_worker(|config| config.with_requested_rank(Some(1)));
    let f = c.add_worker(|config| config.with_requested_rank(Some(7)));
    // Let A's and C's Hellos be accepted (and F refused) before B asks for A's rank.
    assert!(c.run_until(Duration::from_secs(1), |c| rejected(c, f).is_some()));
    c.run_until(Duration::from_millis(200), |_| false);
    assert_eq!(c.node(c.seed).unwrap().stats().pending_joiners, 2);
    let b = c.add_worker(|config| config.with_requested_rank(Some(3)));
    assert!(c.run_until(Duration::from_secs(1), |c| rejected(c, b).is_some()));
    let d = c.add_worker(|config| config);
    let e = c.add_worker(|config| config);
    let members = [a, cc, d, e];
    assert!(c.run_until_ready(&members, FORMATION_LIMIT));
    check_formed(&c, &members).unwrap();

    assert_eq!(c.ready(a).unwrap().0, 3);
    assert_eq!(c.ready(cc).unwrap().0, 1);
    let mut free = [c.ready(d).unwrap().0, c.ready(e).unwrap().0];
    free.sort();
    assert_eq!(free, [0, 2], "the unrequested ranks go to the rest");

    assert_eq!(rejected(&c, f), Some(RejectReason::RankOutOfRange));
    assert_eq!(rejected(&c, b), Some(RejectReason::RankTaken));
    let seed_says: Vec<_> = c
        .events(c.seed)
        .iter()
        .filter_map(|ev| match ev {
            Event::JoinerRejected { remote, reason } => Some((*remote, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seed_says,
        [
            (c.sim.addr(f), RejectReason::RankOutOfRange),
            (c.sim.addr(b), RejectReason::RankTaken)
        ]
    );
    // The refused workers stay out for good.
    c.run_until(Duration::from_secs(2), |_| false);
    for w in [b, f] {
        assert_eq!(c.events(w).len(), 1);
        assert!(!c.node(w).unwrap().is_ready());
    }
}
