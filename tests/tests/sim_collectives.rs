//! Every collective over QUIC in the simulator, against the sequential reference.

use std::time::Duration;

use nexar_proto::codec::{CollectiveKind, DType, ReduceOp};
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId, LinkConfig, LossModel};
use nexar_tests::collectives::{check_case, run_case, wait_all, Case};

/// Workers ordered by their rank.
fn by_rank(c: &ClusterSim) -> Vec<HostId> {
    let mut v: Vec<(u32, HostId)> = c
        .workers
        .iter()
        .map(|w| (c.ready(*w).unwrap().0, *w))
        .collect();
    v.sort();
    v.into_iter().map(|(_, h)| h).collect()
}

fn formed(seed: u64, n: u32, link: LinkConfig) -> Result<(ClusterSim, Vec<HostId>), String> {
    let mut c = ClusterSim::with_workers(seed, n, link);
    let workers = c.workers.clone();
    if !c.run_until_ready(&workers, Duration::from_secs(30)) {
        return Err(format!("{n} workers did not form"));
    }
    let ranks = by_rank(&c);
    Ok((c, ranks))
}

fn all_cases(n: u32, dtype: DType, count: usize) -> Vec<Case> {
    use CollectiveKind::*;
    let root = (n - 1).min(1);
    let mut v = vec![
        Case {
            kind: AllReduce,
            dtype,
            op: ReduceOp::Sum,
            root: 0,
            count,
        },
        Case {
            kind: Broadcast,
            dtype,
            op: ReduceOp::None,
            root,
            count,
        },
        Case {
            kind: Reduce,
            dtype,
            op: ReduceOp::Max,
            root,
            count,
        },
        Case {
            kind: AllGather,
            dtype,
            op: ReduceOp::None,
            root: 0,
            count,
        },
        Case {
            kind: ReduceScatter,
            dtype,
            op: ReduceOp::Sum,
            root: 0,
            count,
        },
        Case {
            kind: Gather,
            dtype,
            op: ReduceOp::None,
            root,
            count,
        },
        Case {
            kind: Scatter,
            dtype,
            op: ReduceOp::None,
            root,
            count,
        },
        Case {
            kind: AllToAll,
            dtype,
            op: ReduceOp::None,
            root: 0,
            count,
        },
        Case {
            kind: Scan,
            dtype,
            op: ReduceOp::Min,
            root: 0,
            count,
        },
        Case {
            kind: ExclusiveScan,
            dtype,
            op: ReduceOp::Sum,
            root: 0,
            count,
        },
        Case {
            kind: Barrier,
            dtype,
            op: ReduceOp::None,
            root: 0,
            count: 0,
        },
    ];
    v.push(Case {
        kind: AllReduce,
        dtype,
        op: ReduceOp::Prod,
        root: 0,
        count,
    });
    v
}

#[test]
fn every_collective_on_four_ranks_clean_network() {
    let (mut c, ranks) =
        formed(11, 4, LinkConfig::with_latency(Duration::from_micros(100))).unwrap();
    for dtype in DType::ALL.iter().copied() {
        for case in all_cases(4, dtype, 37) {
            let results = run_case(
                &mut c,
                &ranks,
                CommId::WORLD,
                &case,
                Duration::from_secs(30),
            )
            .unwrap();
            check_case(&case, &results).unwrap();
        }
    }
}

/// Every collective, on 2, 3, 4, 7 and 16 ranks, with 5% loss and 1-20 ms latency
/// (jitter reorders), for 200 seeds; the dtype and count change with the seed.
#[test]
fn every_collective_lossy_jittery_many_seeds() {
    run_seeds(200, |seed| {
        for n in [2u32, 3, 4, 7, 16] {
            let link = LinkConfig {
                latency: Duration::from_millis(1),
                jitter: Duration::from_millis(19),
                loss: LossModel::Bernoulli(0.05),
                ..LinkConfig::default()
            };
            let (mut c, ranks) = formed(seed, n, link)?;
            let dtype = DType::ALL[(seed as usize + n as usize) % DType::ALL.len()];
            for case in all_cases(n, dtype, 1 + (seed as usize * 13 + n as usize) % 300) {
                let results = run_case(
                    &mut c,
                    &ranks,
                    CommId::WORLD,
                    &case,
                    Duration::from_secs(120),
                )?;
                check_case(&case, &results).map_err(|e| format!("{n} ranks: {e}"))?;
            }
        }
        Ok(())
    });
}

fn lan() -> LinkConfig {
    LinkConfig::with_latency(Duration::from_micros(200))
}

/// Split the world into 4 sub-communicators and run one non-blocking allreduce on each
/// at the same time; each gets its own group's sum, and the world still works after.
#[test]
fn four_concurrent_allreduces_on_split_communicators() {
    use nexar_proto::collective::Buffer;
    use nexar_proto::{Command, Outcome};
    run_seeds(20, |seed| {
        let (mut c, ranks) = formed(seed, 8, lan())?;
        // color = rank % 4, key = -rank (reverse order inside each group).
        let mut split_ops = Vec::new();
        for (r, h) in ranks.iter().enumerate() {
            let op = c
                .command(
                    *h,
                    Command::Split {
                        comm: CommId::WORLD,
                        color: Some(r as u32 % 4),
                        key: -(r as i64),
                    },
                )
                .map_err(|e| e.to_string())?;
            split_ops.push((*h, op));
        }
        let outcomes = wait_all(&mut c, &split_ops, Duration::from_secs(30))
            .map_err(|e| format!("split: {e}"))?;
        let mut comms = Vec::new();
        for (r, got) in outcomes.into_iter().enumerate() {
            match got {
                Ok(Outcome::Split {
                    comm: Some((id, sub_rank, size)),
                    members,
                    ..
                }) => {
                    // Members r, r+4 with keys -r, -(r+4): the higher world rank comes first.
                    let expect_rank = if r < 4 { 1 } else { 0 };
                    if size != 2 || sub_rank != expect_rank {
                        return Err(format!("rank {r}: sub rank {sub_rank} of {size}"));
                    }
                    let low = r % 4;
                    if members != [low as u32 + 4, low as u32] {
                        return Err(format!("rank {r}: members {members:?}"));
                    }
                    comms.push(id);
                }
                other => return Err(format!("rank {r}: split gave {other:?}")),
            }
        }
        // All four allreduces in flight at once.
        let mut ops = Vec::new();
        for (r, h) in ranks.iter().enumerate() {
            let input = Buffer::from_vec(vec![r as f32 + 1.0; 1000]);
            let cmd = Command::Collective {
                comm: comms[r],
                kind: CollectiveKind::AllReduce,
                op: ReduceOp::Sum,
                root: 0,
                count: 1000,
                input,
                timeout: None,
            };
            ops.push((*h, c.command(*h, cmd).map_err(|e| e.to_string())?));
        }
        let outcomes = wait_all(&mut c, &ops, Duration::from_secs(30))
            .map_err(|e| format!("allreduces: {e}"))?;
        for (r, got) in outcomes.into_iter().enumerate() {
            let want = (r % 4 + 1 + r % 4 + 5) as f32;
            match got {
                Ok(Outcome::Collective { buffer }) => {
                    let v = buffer.into_vec::<f32>().map_err(|_| "dtype")?;
                    if v.iter().any(|x| *x != want) {
                        return Err(format!("rank {r}: got {} want {want}", v[0]));
                    }
                }
                other => return Err(format!("rank {r}: {other:?}")),
            }
        }
        // The world communicator is unaffected.
        let case = Case {
            kind: CollectiveKind::AllReduce,
            dtype: DType::I32,
            op: ReduceOp::Sum,
            root: 0,
            count: 5,
        };
        let results = run_case(
            &mut c,
            &ranks,
            CommId::WORLD,
            &case,
            Duration::from_secs(30),
        )?;
        check_case(&case, &results)
    });
}

/// Ranks calling different collectives all get `Mismatch` naming the field, never a hang.
#[test]
fn mismatched_collectives_fail_on_every_rank() {
    use nexar_proto::collective::Buffer;
    use nexar_proto::{Command, OpError};
    run_seeds(20, |seed| {
        let (mut c, ranks) = formed(seed, 4, lan())?;
        // Rank 2 asks for 64 elements where everyone else asks for 32.
        let mut ops = Vec::new();
        for (r, h) in ranks.iter().enumerate() {
            let count = if r == 2 { 64 } else { 32 };
            let cmd = Command::Collective {
                comm: CommId::WORLD,
                kind: CollectiveKind::AllReduce,
                op: ReduceOp::Sum,
                root: 0,
                count,
                input: Buffer::from_vec(vec![1.0f32; count]),
                timeout: None,
            };
            ops.push((*h, c.command(*h, cmd).map_err(|e| e.to_string())?));
        }
        // Never a hang: every rank completes, and with an error.
        let outcomes = wait_all(&mut c, &ops, Duration::from_secs(20))
            .map_err(|e| format!("a rank hung on a mismatched collective: {e}"))?;
        for (r, got) in outcomes.into_iter().enumerate() {
            match got {
                Err(OpError::Mismatch {
                    field, rank, peer, ..
                }) => {
                    if field != "count" && field != "algorithm" {
                        return Err(format!("rank {r}: field {field}"));
                    }
                    if rank != r as u32 || (r != 2 && peer != 2) || (r == 2 && peer == 2) {
                        return Err(format!("rank {r}: names ranks {rank} and {peer}"));
                    }
                }
                other => return Err(format!("rank {r}: {other:?}")),
            }
        }
        Ok(())
    });
}

/// A rank that never calls the collective: after the deadline (60 s of virtual time by
/// default) the others fail with `Timeout` naming the op, its sequence number, the ranks
/// they were blocked on, and their flight record.
#[test]
fn missing_rank_times_out_naming_it() {
    use nexar_proto::collective::Buffer;
    use nexar_proto::{Command, OpError};
    run_seeds(10, |seed| {
        let mut c = ClusterSim::with_workers(seed, 4, lan());
        let workers = c.workers.clone();
        if !c.run_until_ready(&workers, Duration::from_secs(30)) {
            return Err("no formation".into());
        }
        let ranks = by_rank(&c);
        let mut ops = Vec::new();
        for h in &ranks[..3] {
            let cmd = Command::Collective {
                comm: CommId::WORLD,
                kind: CollectiveKind::AllReduce,
                op: ReduceOp::Sum,
                root: 0,
                count: 8,
                input: Buffer::from_vec(vec![1i64; 8]),
                timeout: None,
            };
            ops.push((*h, c.command(*h, cmd).map_err(|e| e.to_string())?));
        }
        let outcomes = wait_all(&mut c, &ops, Duration::from_secs(120))
            .map_err(|e| format!("no timeout: {e}"))?;
        for (r, (got, (_, op))) in outcomes.into_iter().zip(&ops).enumerate() {
            match got {
                Err(OpError::Timeout {
                    op: o,
                    seq,
                    waiting_for,
                    flight,
                    ..
                }) => {
                    if o != *op || seq != 0 || flight.0.is_empty() {
                        return Err(format!("rank {r}: timeout names {o:?} seq {seq}"));
                    }
                    if waiting_for.is_empty() {
                        return Err(format!("rank {r}: waiting for nobody"));
                    }
                }
                other => return Err(format!("rank {r}: {other:?}")),
            }
        }
        Ok(())
    });
}
