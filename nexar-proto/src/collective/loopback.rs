//! The real executor of every rank in one address space, with no transport: for the
//! criterion benches (`benches/executor.rs`) and as a check that executor and codec agree.
//!
//! Unlike the test mailbox (which models the plans), this runs the node's executor itself: each
//! chunk it emits is a whole encoded frame, decoded again with the default `Limits`
//! (as a peer's stream decoder would) and handed to the destination's executor in FIFO
//! order. So a run costs what a node's collective layer costs, minus QUIC, TLS and the
//! sockets: planning, segmenting, framing, decoding, plan checks and the reductions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::buffer::Buffer;
use super::comm::CommId;
use super::exec::{ExecConfig, ExecOutput, Executor};
use super::select::CollectiveConfig;
use crate::codec::{CollectiveKind, FrameDecoder, Limits, Message, ReduceOp};
use crate::event::{OpId, Outcome};

/// Why an in-memory run did not produce every rank's output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoopbackError {
    /// The executor refused to start the operation on a rank.
    #[error("rank {rank} refused the collective: {detail}")]
    Refused { rank: u32, detail: String },
    /// The operation failed on a rank.
    #[error("rank {rank} failed: {detail}")]
    Failed { rank: u32, detail: String },
    /// A frame an executor emitted did not decode as a chunk.
    #[error("rank {from} sent an undecodable frame: {detail}")]
    Frame { from: u32, detail: String },
    /// Nothing left to deliver, yet some rank has not completed.
    #[error("rank {rank} never completed")]
    Stuck { rank: u32 },
}

/// Run one collective on `inputs.len()` ranks (rank `i` contributes `inputs[i]`) through
/// the real executor and codec, and return every rank's output in rank order. `now` is
/// any instant (the core reads no clock); no deadline can pass during the run.
pub fn run_collective(
    now: Instant,
    kind: CollectiveKind,
    op: ReduceOp,
    root: u32,
    count: usize,
    inputs: Vec<Buffer>,
    config: &CollectiveConfig,
) -> Result<Vec<Buffer>, LoopbackError> {
    let world = inputs.len() as u32;
    let exec_config = ExecConfig {
        collective: config.clone(),
        timeout: Duration::from_secs(3600),
        max_early_bytes: usize::MAX,
    };
    let mut execs: Vec<Executor> = (0..world)
        .map(|me| Executor::new(me, world, 0, exec_config.clone(), now))
        .collect();
    let mut outputs: Vec<Option<Buffer>> = vec![None; world as usize];
    let mut wire: VecDeque<(u32, u32, Bytes)> = VecDeque::new();
    for (rank, input) in inputs.into_iter().enumerate() {
        let rank = rank as u32;
        let mut out = Vec::new();
        execs[rank as usize]
            .start(
                now,
                OpId(0),
                CommId::WORLD,
                (kind, op, root, count),
                input,
                None,
                &mut out,
            )
            .map_err(|e| LoopbackError::Refused {
                rank,
                detail: e.to_string(),
            })?;
        // No connection to fill here: every deferred chunk goes at once.
        execs[rank as usize].pump_sends(&mut |_, _| true, &mut out);
        collect(rank, out, &mut wire, &mut outputs)?;
    }
    // One decoder per (from, to) stream, as a connection's collective stream has.
    let mut decoders: Vec<FrameDecoder> = (0..world * world)
        .map(|_| FrameDecoder::new(Limits::DEFAULT))
        .collect();
    while let Some((from, to, bytes)) = wire.pop_front() {
        let decoder = &mut decoders[(from * world + to) as usize];
        decoder.push_bytes(bytes);
        let chunk = match decoder.poll_message() {
            Ok(Some(Message::Chunk(chunk))) => chunk,
            Ok(None) => continue, // a header waiting for its payload
            other => {
                return Err(LoopbackError::Frame {
                    from,
                    detail: format!("{other:?}"),
                })
            }
        };
        let mut out = Vec::new();
        execs[to as usize].on_chunk(from, chunk, &mut out);
        execs[to as usize].pump_sends(&mut |_, _| true, &mut out);
        collect(to, out, &mut wire, &mut outputs)?;
    }
    outputs
        .into_iter()
        .enumerate()
        .map(|(rank, b)| b.ok_or(LoopbackError::Stuck { rank: rank as u32 }))
        .collect()
}

fn collect(
    rank: u32,
    out: Vec<ExecOutput>,
    wire: &mut VecDeque<(u32, u32, Bytes)>,
    outputs: &mut [Option<Buffer>],
) -> Result<(), LoopbackError> {
    for o in out {
        match o {
            ExecOutput::Send { to, frame, bulk } => {
                wire.push_back((rank, to, frame));
                for piece in bulk.parts() {
                    wire.push_back((rank, to, piece.clone()));
                }
            }
            ExecOutput::Completed { outcome, .. } => match outcome {
                Ok(Outcome::Collective { buffer }) => outputs[rank as usize] = Some(buffer),
                Ok(other) => {
                    return Err(LoopbackError::Failed {
                        rank,
                        detail: format!("unexpected outcome {other:?}"),
                    })
                }
                Err(e) => {
                    return Err(LoopbackError::Failed {
                        rank,
                        detail: e.to_string(),
                    })
                }
            },
            // Nothing is held back: the early window is unbounded here.
            ExecOutput::SetReading { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::spec::{layout, CollectiveSpec};

    /// Any instant will do: the executor never compares it with the clock.
    fn any_instant() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn allreduce(world: u32, count: usize, config: &CollectiveConfig) -> Vec<Vec<f32>> {
        let now = any_instant();
        let inputs = (0..world)
            .map(|r| Buffer::from_vec((0..count).map(|i| (r + i as u32 % 7) as f32).collect()))
            .collect();
        run_collective(
            now,
            CollectiveKind::AllReduce,
            ReduceOp::Sum,
            0,
            count,
            inputs,
            config,
        )
        .unwrap()
        .into_iter()
        .map(|b| b.into_vec::<f32>().unwrap())
        .collect()
    }

    #[test]
    fn outputs_passed_in_place_give_what_copied_inputs_give() {
        let now = any_instant();
        // The default thresholds, ones that send every size down the two-phase
        // broadcast and the ring all-gather, and the pipelined chain for every size.
        let large = CollectiveConfig {
            small_allgather_bytes: 0,
            large_broadcast_bytes: 0,
            pipelined_broadcast_bytes: usize::MAX,
            ..CollectiveConfig::default()
        };
        let chain = CollectiveConfig {
            pipelined_broadcast_bytes: 0,
            ..CollectiveConfig::default()
        };
        let kinds = [
            CollectiveKind::AllGather,
            CollectiveKind::Gather,
            CollectiveKind::Broadcast,
            CollectiveKind::Scatter,
        ];
        for config in [CollectiveConfig::default(), large, chain] {
            for kind in kinds {
                for world in [1u32, 2, 3, 4, 5, 8] {
                    // 300 000 f32: the chain cuts it into 5 segments.
                    for count in [1usize, 7, 70_000, 300_000] {
                        for root in [0, world - 1] {
                            let all = world as usize * count;
                            let data = |r: u32, len: usize| -> Vec<f32> {
                                (0..len)
                                    .map(|i| (r as usize * 1000 + i % 977) as f32)
                                    .collect()
                            };
                            let spec = CollectiveSpec {
                                kind,
                                dtype: crate::codec::DType::F32,
                                op: ReduceOp::None,
                                count,
                                root,
                            };
                            let (copied, in_place): (Vec<_>, Vec<_>) = (0..world)
                                .map(|r| {
                                    let layout = layout(&spec, world, r);
                                    let input = data(r, layout.input.len());
                                    // Garbage wherever the output is not this rank's own part.
                                    let whole = match layout.in_place(layout.output.len()) {
                                        true => {
                                            let mut w = vec![f32::NAN; layout.output.len()];
                                            w[layout.input.clone()].copy_from_slice(&input);
                                            w
                                        }
                                        false => input.clone(),
                                    };
                                    (Buffer::from_vec(input), Buffer::from_vec(whole))
                                })
                                .unzip();
                            let run = |inputs| {
                                run_collective(
                                    now,
                                    kind,
                                    ReduceOp::None,
                                    root,
                                    count,
                                    inputs,
                                    &config,
                                )
                                .unwrap()
                                .into_iter()
                                .map(|b| b.into_vec::<f32>().unwrap())
                                .collect::<Vec<_>>()
                            };
                            let (want, got) = (run(copied), run(in_place));
                            let what = format!("{kind:?} world {world} count {count} root {root}");
                            assert_eq!(got, want, "{what}");
                            let gathered: Vec<f32> =
                                (0..world).flat_map(|r| data(r, count)).collect();
                            let scattered = data(root, all);
                            for (r, out) in want.iter().enumerate() {
                                let expect: &[f32] = match kind {
                                    CollectiveKind::AllGather => &gathered,
                                    CollectiveKind::Gather if r == root as usize => &gathered,
                                    CollectiveKind::Gather => &[],
                                    CollectiveKind::Broadcast => &data(root, count),
                                    _ => &scattered[r * count..(r + 1) * count],
                                };
                                assert_eq!(out, expect, "{what} rank {r}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_all_gather_in_place_returns_the_vector_it_was_given() {
        let now = any_instant();
        let (world, count) = (4usize, 100_000usize);
        let inputs: Vec<Vec<f32>> = (0..world)
            .map(|r| {
                let mut v = vec![0.0; world * count];
                v[r * count..(r + 1) * count].fill(r as f32 + 1.0);
                v
            })
            .collect();
        let ptrs: Vec<*const f32> = inputs.iter().map(|v| v.as_ptr()).collect();
        let outs = run_collective(
            now,
            CollectiveKind::AllGather,
            ReduceOp::None,
            0,
            count,
            inputs.into_iter().map(Buffer::from_vec).collect(),
            &CollectiveConfig::default(),
        )
        .unwrap();
        for (r, out) in outs.into_iter().enumerate() {
            let out = out.into_vec::<f32>().unwrap();
            assert_eq!(out.as_ptr(), ptrs[r], "rank {r}: no new output allocated");
            let want: Vec<f32> = (0..world * count)
                .map(|i| (i / count) as f32 + 1.0)
                .collect();
            assert_eq!(out, want, "rank {r}");
        }
    }

    #[test]
    fn every_allreduce_algorithm_sums_through_the_codec() {
        // 2 elements (recursive doubling), 64 KiB+ (halving-doubling), 4 MiB+ (ring,
        // several segments); worlds with and without a power of two.
        for world in [1, 2, 3, 4, 7, 8] {
            for count in [2usize, 20_000, 1 << 20] {
                let outs = allreduce(world, count, &CollectiveConfig::default());
                let want: Vec<f32> = (0..count)
                    .map(|i| (0..world).map(|r| (r + i as u32 % 7) as f32).sum())
                    .collect();
                for (rank, out) in outs.iter().enumerate() {
                    assert_eq!(out, &want, "world {world} count {count} rank {rank}");
                }
            }
        }
    }
}
