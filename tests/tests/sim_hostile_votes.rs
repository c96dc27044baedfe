//! A member that lies in recovery votes, in the simulator, under every recovery policy:
//! one vote naming every other rank dead, a live rank named dead again and again, votes
//! stamped with a wrong epoch or a wrong voter or malformed, and a false vote sent while a
//! rank really crashes. The honest ranks are never evicted; under the abort policy no
//! vote changes anything; under the others the liar is the one evicted. Each scenario
//! runs over many seeds (`NEXAR_SIM_SEED` replays one) and a failure prints its seed.

use std::time::Duration;

use nexar_proto::codec::{Message, RecoveryVote};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{Command, CommandError, OpError, RecoveryPolicy};
use nexar_tests::collectives::wait_all;
use nexar_tests::motion::{
    allreduce, changes, check_agreement, cluster, correct_on, downs, evicted, issue,
    run_until_epochs, HEARTBEAT_TIMEOUT,
};

const SEEDS: u64 = 40;
const LIMIT: Duration = Duration::from_secs(20);
const POLICIES: [RecoveryPolicy; 3] = [
    RecoveryPolicy::Abort,
    RecoveryPolicy::Automatic,
    RecoveryPolicy::Manual,
];

fn run_for(c: &mut ClusterSim, d: Duration) {
    c.run_until(d, |_| false);
}

fn without(hosts: &[HostId], gone: &[HostId]) -> Vec<HostId> {
    hosts
        .iter()
        .copied()
        .filter(|h| !gone.contains(h))
        .collect()
}

/// The member at `host` sends `vote` to the seed as if it were its own.
fn forge(c: &mut ClusterSim, host: HostId, vote: RecoveryVote) -> Result<(), String> {
    let sent = c
        .node_mut(host)
        .ok_or("not a node")?
        .send_to_seed(&Message::RecoveryVote(vote));
    if sent {
        Ok(())
    } else {
        Err("the forged vote could not be queued".into())
    }
}

fn epoch(c: &ClusterSim, host: HostId) -> u64 {
    c.node(host).map_or(0, |n| n.epoch())
}

fn seed_stale(c: &ClusterSim) -> u64 {
    c.node(c.seed).map_or(0, |n| n.stats().stale_dropped)
}

/// Nothing happened to anyone: no eviction, no epoch change, no peer reported down,
/// and every rank (the liar too) still computes a correct allreduce together.
fn nothing_happened(c: &mut ClusterSim, ranks: &[HostId]) -> Result<(), String> {
    for h in ranks {
        if evicted(c, *h) || !changes(c, *h).is_empty() || !downs(c, *h).is_empty() {
            return Err(format!("a rank was disturbed: {:?}", c.events(*h)));
        }
    }
    correct_on(c, ranks, &allreduce(300))
}

/// The liar `liar` alone was evicted: the others agree on one epoch change whose dead
/// set is exactly the liar (plus `crashed`, if a rank really died), and compute on.
fn only_liar_evicted(
    c: &mut ClusterSim,
    ranks: &[HostId],
    liar: usize,
    crashed: Option<usize>,
) -> Result<(), String> {
    let gone: Vec<HostId> = [Some(liar), crashed]
        .into_iter()
        .flatten()
        .map(|i| ranks[i])
        .collect();
    let honest = without(ranks, &gone);
    if !run_until_epochs(c, &honest, 1, LIMIT) {
        return Err("the honest ranks never moved on".into());
    }
    // Let a follow-up round (if any) finish too.
    run_for(c, HEARTBEAT_TIMEOUT * 4);
    for h in &honest {
        if evicted(c, *h) {
            return Err(format!("an honest rank was evicted: {:?}", c.events(*h)));
        }
    }
    let order = check_agreement(c, &honest)?;
    let mut dead: Vec<u32> = changes(c, order[0])
        .iter()
        .flat_map(|x| x.3.clone())
        .collect();
    dead.sort_unstable();
    let mut want: Vec<u32> = [Some(liar), crashed]
        .into_iter()
        .flatten()
        .map(|i| i as u32)
        .collect();
    want.sort_unstable();
    // One round settles it all: a single change, whose dead set is exactly the liar (and
    // the crashed rank).
    let all = changes(c, order[0]);
    if all.len() != 1 || dead != want || all[0].2 != honest.len() as u32 {
        return Err(format!("changes {all:?}, want one removing {want:?}"));
    }
    let l = ranks[liar];
    if !c.run_until(LIMIT, |c| evicted(c, l)) {
        return Err(format!(
            "the liar never heard its eviction: {:?}",
            c.events(l)
        ));
    }
    correct_on(c, &order, &allreduce(500))
}

fn everyone_dead(seed: u64, policy: RecoveryPolicy) -> Result<(), String> {
    let n = 3 + (seed % 3) as u32;
    let (mut c, ranks) = cluster(seed, n, policy)?;
    let liar = (seed % u64::from(n)) as usize;
    run_for(&mut c, Duration::from_millis(seed * 37 % 400));
    let vote = RecoveryVote {
        epoch: epoch(&c, ranks[liar]),
        voter: liar as u32,
        dead: (0..n).filter(|r| *r as usize != liar).collect(),
    };
    forge(&mut c, ranks[liar], vote)?;
    match policy {
        RecoveryPolicy::Abort => {
            let before = seed_stale(&c);
            run_for(&mut c, HEARTBEAT_TIMEOUT * 6);
            if seed_stale(&c) <= before {
                return Err("the seed did not count the refused vote".into());
            }
            nothing_happened(&mut c, &ranks)
        }
        _ => only_liar_evicted(&mut c, &ranks, liar, None),
    }
}

#[test]
fn a_vote_naming_every_other_rank_evicts_only_the_voter() {
    for policy in POLICIES {
        run_seeds(SEEDS, |seed| everyone_dead(seed, policy));
    }
}

fn same_rank_again_and_again(seed: u64, policy: RecoveryPolicy) -> Result<(), String> {
    let n = 4;
    let (mut c, ranks) = cluster(seed, n, policy)?;
    let liar = (seed % u64::from(n)) as usize;
    let victim = (liar + 1 + (seed / 4 % 3) as usize) % n as usize;
    let e = epoch(&c, ranks[liar]);
    for _ in 0..6 {
        forge(
            &mut c,
            ranks[liar],
            RecoveryVote {
                epoch: e,
                voter: liar as u32,
                dead: vec![victim as u32],
            },
        )?;
        run_for(&mut c, HEARTBEAT_TIMEOUT / 5);
    }
    match policy {
        RecoveryPolicy::Abort => {
            run_for(&mut c, HEARTBEAT_TIMEOUT * 4);
            nothing_happened(&mut c, &ranks)
        }
        _ => {
            only_liar_evicted(&mut c, &ranks, liar, None)?;
            if changes(&c, ranks[victim]).len() != 1 {
                return Err(format!(
                    "repeats caused more changes: {:?}",
                    changes(&c, ranks[victim])
                ));
            }
            Ok(())
        }
    }
}

#[test]
fn a_live_rank_voted_dead_again_and_again_stays() {
    for policy in POLICIES {
        run_seeds(SEEDS, |seed| same_rank_again_and_again(seed, policy));
    }
}

/// Votes the seed must not take from anyone: a wrong epoch (either side), a voter that
/// is not the sender, the seed's own voter id, the voter itself named, a rank past the
/// world, a rank named twice.
fn refused_votes(seed: u64, policy: RecoveryPolicy) -> Result<(), String> {
    let n = 3 + (seed % 2) as u32;
    let (mut c, ranks) = cluster(seed, n, policy)?;
    let liar = (seed % u64::from(n)) as usize;
    let me = liar as u32;
    let other = (me + 1) % n;
    let e = epoch(&c, ranks[liar]);
    let bad = [
        RecoveryVote {
            epoch: e + 1,
            voter: me,
            dead: vec![other],
        },
        RecoveryVote {
            epoch: e.wrapping_sub(1),
            voter: me,
            dead: vec![other],
        },
        RecoveryVote {
            epoch: e,
            voter: other,
            dead: vec![me],
        },
        RecoveryVote {
            epoch: e,
            voter: RecoveryVote::COORDINATOR,
            dead: vec![other],
        },
        RecoveryVote {
            epoch: e,
            voter: me,
            dead: vec![other, me],
        },
        RecoveryVote {
            epoch: e,
            voter: me,
            dead: vec![other, n],
        },
        RecoveryVote {
            epoch: e,
            voter: me,
            dead: vec![other, other],
        },
    ];
    let count = bad.len() as u64;
    let before = seed_stale(&c);
    for v in bad {
        forge(&mut c, ranks[liar], v)?;
        run_for(&mut c, Duration::from_millis(30));
    }
    run_for(&mut c, HEARTBEAT_TIMEOUT * 6);
    let dropped = seed_stale(&c) - before;
    if dropped != count {
        return Err(format!("the seed dropped {dropped} of {count} bad votes"));
    }
    nothing_happened(&mut c, &ranks)
}

#[test]
fn votes_in_a_wrong_epoch_or_malformed_change_nothing() {
    for policy in POLICIES {
        run_seeds(SEEDS, |seed| refused_votes(seed, policy));
    }
}

/// A rank really crashes and, before anyone has noticed, the liar names every other
/// rank dead: the crashed rank and the liar go, every honest rank stays.
fn crash_and_lie(seed: u64, policy: RecoveryPolicy) -> Result<(), String> {
    let n = 4 + (seed % 2) as u32;
    let (mut c, ranks) = cluster(seed, n, policy)?;
    let liar = (seed % u64::from(n)) as usize;
    let crashed = (liar + 1 + (seed / 2 % u64::from(n - 1)) as usize) % n as usize;
    let e = epoch(&c, ranks[liar]);
    c.sim.crash(ranks[crashed]);
    // Within the detection window: nobody has noticed the crash yet.
    run_for(&mut c, Duration::from_millis(seed * 53 % 300));
    let vote = RecoveryVote {
        epoch: e,
        voter: liar as u32,
        dead: (0..n).filter(|r| *r as usize != liar).collect(),
    };
    forge(&mut c, ranks[liar], vote)?;
    let honest = without(&ranks, &[ranks[liar], ranks[crashed]]);
    match policy {
        RecoveryPolicy::Abort => {
            let h = honest.clone();
            if !c.run_until(LIMIT, |c| h.iter().all(|x| !downs(c, *x).is_empty())) {
                return Err("the crash was not detected".into());
            }
            run_for(&mut c, HEARTBEAT_TIMEOUT * 4);
            for x in &honest {
                if evicted(&c, *x) || !changes(&c, *x).is_empty() {
                    return Err(format!(
                        "abort policy changed membership: {:?}",
                        c.events(*x)
                    ));
                }
                let refused = c.command(
                    *x,
                    Command::Recv {
                        comm: CommId::WORLD,
                        from: 0,
                        tag: 0,
                    },
                );
                if refused
                    != Err(CommandError::Aborted {
                        rank: crashed as u32,
                    })
                {
                    return Err(format!("after abort a command gave {refused:?}"));
                }
            }
            Ok(())
        }
        RecoveryPolicy::Manual => {
            // The honest application decides to recover once it sees the crash.
            let h = honest.clone();
            if !c.run_until(LIMIT, |c| {
                h.iter()
                    .all(|x| !downs(c, *x).is_empty() || !changes(c, *x).is_empty())
            }) {
                return Err("the crash was not reported".into());
            }
            for x in &honest {
                if changes(&c, *x).is_empty() {
                    let _ = c.command(*x, Command::Recover);
                }
            }
            only_liar_evicted(&mut c, &ranks, liar, Some(crashed))
        }
        _ => only_liar_evicted(&mut c, &ranks, liar, Some(crashed)),
    }
}

#[test]
fn a_real_crash_and_a_false_vote_together() {
    for policy in POLICIES {
        run_seeds(SEEDS, |seed| crash_and_lie(seed, policy));
    }
}

/// The liar lies in the middle of a collective: the honest ranks' operation either
/// completes correctly or fails naming the liar, never anyone honest.
#[test]
fn a_false_vote_during_a_collective_blames_only_the_liar() {
    run_seeds(SEEDS, |seed| {
        let n = 4;
        let (mut c, ranks) = cluster(seed, n, RecoveryPolicy::Automatic)?;
        let liar = (seed % u64::from(n)) as usize;
        let ops = issue(&mut c, &ranks, &allreduce(64 * 1024))?;
        run_for(&mut c, Duration::from_micros(200 + seed * 71 % 2000));
        let vote = RecoveryVote {
            epoch: epoch(&c, ranks[liar]),
            voter: liar as u32,
            dead: (0..n).filter(|r| *r as usize != liar).collect(),
        };
        forge(&mut c, ranks[liar], vote)?;
        let live: Vec<_> = ops.into_iter().filter(|(h, _)| *h != ranks[liar]).collect();
        for r in wait_all(&mut c, &live, LIMIT)? {
            match r {
                Ok(_) => {}
                Err(OpError::PeerLost { rank }) if rank as usize == liar => {}
                other => return Err(format!("an honest rank's allreduce gave {other:?}")),
            }
        }
        let downs_ok = ranks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != liar)
            .all(|(_, h)| downs(&c, *h).iter().all(|d| *d as usize == liar));
        if !downs_ok {
            return Err("an honest rank was reported down".into());
        }
        only_liar_evicted(&mut c, &ranks, liar, None)
    });
}
