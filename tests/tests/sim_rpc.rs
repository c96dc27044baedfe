//! RPC in the simulator, each scenario over 200 seeds on lossy, reordering links:
//! concurrent calls among several ranks (self-calls included) answered in random order
//! and matched to their callers; unknown functions and handler errors as typed errors;
//! a target that crashes mid-call; deadlines; the per-caller overload bound; and a call
//! that passes a paused point-to-point stream.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use nexar_proto::codec::RpcStatus;
use nexar_proto::collective::CommId;
use nexar_proto::sim::{run_seeds, ClusterSim, HostId};
use nexar_proto::{
    Command, CommandError, Event, NodeConfig, OpError, OpId, Outcome, RecoveryPolicy, RpcRequestId,
};
use nexar_tests::support::{form, lossy, TestRng};

const SEEDS: u64 = 200;
/// A function every rank registers: answers `rank || payload reversed`.
const ECHO: u32 = 1;
/// A function every rank registers whose handler always fails with `no:` + payload.
const FAILS: u32 = 2;
/// A function nobody registers.
const MISSING: u32 = 77;

/// A request the "application" of a rank has received and not answered yet.
#[derive(Debug, Clone)]
struct Request {
    rank: u32,
    from: u32,
    request: RpcRequestId,
    fn_id: u32,
    payload: Bytes,
}

/// A formed cluster with every event sorted into completions and requests.
struct Harness {
    c: ClusterSim,
    by_rank: Vec<HostId>,
    done: BTreeMap<(u32, OpId), Result<Outcome, OpError>>,
    requests: Vec<Request>,
}

impl Harness {
    fn form(
        seed: u64,
        n: u32,
        adjust: impl Fn(u32, NodeConfig) -> NodeConfig,
    ) -> Result<Self, String> {
        let link = lossy(0.05, 0.02, Duration::from_millis(2));
        let mut c = ClusterSim::new(seed, n, link);
        for i in 0..n {
            // Requested ranks, so that `adjust` knows whom it configures.
            c.add_worker(|config| adjust(i, config.with_requested_rank(Some(i))));
        }
        let by_rank = form(&mut c)?;
        for h in &by_rank {
            c.take_events(*h);
        }
        Ok(Self {
            c,
            by_rank,
            done: BTreeMap::new(),
            requests: Vec::new(),
        })
    }

    fn node(&mut self, rank: u32) -> &mut nexar_proto::Node {
        self.c
            .node_mut(self.by_rank[rank as usize])
            .expect("a node")
    }

    fn command(&mut self, rank: u32, command: Command) -> Result<OpId, CommandError> {
        self.c.command(self.by_rank[rank as usize], command)
    }

    fn call(
        &mut self,
        rank: u32,
        to: u32,
        fn_id: u32,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<OpId, String> {
        self.command(
            rank,
            Command::Rpc {
                to,
                fn_id,
                payload,
                timeout,
            },
        )
        .map_err(|e| format!("rank {rank}: rpc to {to}: {e}"))
    }

    fn respond(&mut self, r: &Request, status: RpcStatus, payload: Bytes) -> Result<(), String> {
        let request = r.request;
        self.command(
            r.rank,
            Command::RpcRespond {
                request,
                status,
                payload,
            },
        )
        .map(|_| ())
        .map_err(|e| format!("rank {}: respond: {e}", r.rank))
    }

    /// Move collected events into `done` and `requests`.
    fn drain(&mut self) -> Result<(), String> {
        for (rank, h) in self.by_rank.clone().into_iter().enumerate() {
            for e in self.c.take_events(h) {
                let rank = rank as u32;
                match e {
                    Event::Completed { op, outcome } => {
                        if self.done.insert((rank, op), outcome).is_some() {
                            return Err(format!("rank {rank}: {op:?} completed twice"));
                        }
                    }
                    Event::RpcRequest {
                        from,
                        request,
                        fn_id,
                        payload,
                    } => self.requests.push(Request {
                        rank,
                        from,
                        request,
                        fn_id,
                        payload,
                    }),
                    // Failure detection reports a crashed rank; the calls' outcomes are
                    // what these scenarios check.
                    Event::PeerDown { .. } => {}
                    other => return Err(format!("rank {rank}: unexpected {other:?}")),
                }
            }
        }
        Ok(())
    }

    /// Run until `step` (called after every batch of events) says done, or `limit` of
    /// virtual time passes.
    fn pump(
        &mut self,
        limit: Duration,
        mut step: impl FnMut(&mut Self) -> Result<bool, String>,
    ) -> Result<(), String> {
        let deadline = self.c.sim.elapsed() + limit;
        loop {
            self.drain()?;
            if step(self)? {
                return Ok(());
            }
            let now = self.c.sim.elapsed();
            if now >= deadline {
                return Err(format!("not done after {limit:?}"));
            }
            let hosts = self.by_rank.clone();
            // Requests left unanswered on purpose are answered on a later step: come back
            // soon even if nothing happens.
            let slice = if self.requests.is_empty() {
                deadline - now
            } else {
                (deadline - now).min(Duration::from_millis(1))
            };
            self.c
                .run_until(slice, |c| hosts.iter().any(|h| !c.events(*h).is_empty()));
        }
    }
}

fn echo(rank: u32, payload: &[u8]) -> Bytes {
    let mut out = rank.to_le_bytes().to_vec();
    out.extend(payload.iter().rev());
    out.into()
}

fn failure(payload: &[u8]) -> Bytes {
    let mut out = b"no:".to_vec();
    out.extend_from_slice(payload);
    out.into()
}

fn payload(rng: &mut TestRng, caller: u32, index: u32) -> Bytes {
    let len = rng.below(3000) as usize;
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&caller.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend((0..len).map(|_| rng.below(256) as u8));
    out.into()
}

/// Three ranks each make 12 calls at once to random targets (themselves included):
/// mostly `ECHO`, some `FAILS`, some `MISSING`. Each rank's application answers its
/// requests a few at a time in random order. Every call completes exactly once, with
/// the answer to its own request: `Outcome::Rpc` for `ECHO`, `RpcFailed` with the
/// handler's detail for `FAILS`, `RpcFailed { UnknownFunction }` for `MISSING`.
fn concurrent_calls(seed: u64) -> Result<(), String> {
    const N: u32 = 3;
    const CALLS: u32 = 12;
    let mut h = Harness::form(seed, N, |_, c| c)?;
    for r in 0..N {
        h.node(r).register_rpc(ECHO);
        h.node(r).register_rpc(FAILS);
    }
    let mut rng = TestRng::new(seed ^ 0x00c0_ffee);
    let mut expected: BTreeMap<(u32, OpId), Result<Outcome, OpError>> = BTreeMap::new();
    for i in 0..CALLS {
        for caller in 0..N {
            let to = rng.below(u64::from(N)) as u32;
            let fn_id = match rng.below(8) {
                0 => FAILS,
                1 => MISSING,
                _ => ECHO,
            };
            let data = payload(&mut rng, caller, i);
            let want = match fn_id {
                ECHO => Ok(Outcome::Rpc {
                    data: echo(to, &data),
                }),
                FAILS => Err(OpError::RpcFailed {
                    rank: to,
                    fn_id,
                    status: RpcStatus::HandlerError,
                    detail: failure(&data),
                }),
                _ => Err(OpError::RpcFailed {
                    rank: to,
                    fn_id,
                    status: RpcStatus::UnknownFunction,
                    detail: Bytes::new(),
                }),
            };
            let op = h.call(caller, to, fn_id, data, None)?;
            expected.insert((caller, op), want);
        }
    }
    let mut answered = 0usize;
    let delivered = expected.keys().len();
    h.pump(Duration::from_secs(60), |h| {
        // Answer a random subset, in random order.
        let mut pending = std::mem::take(&mut h.requests);
        while !pending.is_empty() {
            let k = rng.below(pending.len() as u64) as usize;
            let r = pending.swap_remove(k);
            if rng.below(3) == 0 {
                h.requests.push(r);
                continue;
            }
            let (status, data) = match r.fn_id {
                ECHO => (RpcStatus::Ok, echo(r.rank, &r.payload)),
                FAILS => (RpcStatus::HandlerError, failure(&r.payload)),
                other => return Err(format!("rank {}: request for {other}", r.rank)),
            };
            // The request names its caller truthfully.
            let named = u32::from_le_bytes(r.payload[..4].try_into().unwrap_or_default());
            if named != r.from {
                return Err(format!("request from {} carries caller {named}", r.from));
            }
            h.respond(&r, status, data)?;
            answered += 1;
        }
        let calls_done = expected.keys().filter(|k| h.done.contains_key(k)).count();
        Ok(calls_done == delivered && h.requests.is_empty())
    })?;
    for (key, want) in &expected {
        let got = h.done.get(key).ok_or(format!("{key:?} never completed"))?;
        if got != want {
            return Err(format!("{key:?}: got {got:?}, want {want:?}"));
        }
    }
    // Every other completion is an answer's `Sent`.
    let sent = h
        .done
        .iter()
        .filter(|(k, _)| !expected.contains_key(k))
        .filter(|(_, v)| matches!(v, Ok(Outcome::Sent)))
        .count();
    if sent != answered || h.done.len() != expected.len() + answered {
        return Err(format!(
            "{sent} Sent for {answered} answers, {} completions",
            h.done.len()
        ));
    }
    for r in 0..N {
        let stats = h.node(r).stats();
        if stats.rpc_calls != 0 || stats.rpc_requests != 0 || stats.rpc_ignored_responses != 0 {
            return Err(format!("rank {r}: {stats:?}"));
        }
    }
    if h.c.sim.stats().dropped() == 0 {
        return Err("no datagram was lost: the fault model is not in effect".into());
    }
    Ok(())
}

#[test]
fn concurrent_calls_are_matched_under_loss_over_200_seeds() {
    run_seeds(SEEDS, concurrent_calls);
}

/// Rank 1 receives rank 0's and rank 2's calls and crashes before answering: both
/// callers get `PeerLost { rank: 1 }`, while rank 0's call to rank 2 (answered) still
/// succeeds; a new call to rank 1 is refused at once.
fn target_crashes(seed: u64) -> Result<(), String> {
    // Manual recovery: only what needs the dead rank fails (abort would fail everything
    // and refuse later commands; automatic would renumber the ranks).
    let mut h = Harness::form(seed, 3, |_, c| c.with_recovery(RecoveryPolicy::Manual))?;
    for r in 0..3 {
        h.node(r).register_rpc(ECHO);
    }
    let doomed0 = h.call(0, 1, ECHO, Bytes::from_static(b"a"), None)?;
    let doomed2 = h.call(2, 1, ECHO, Bytes::from_static(b"b"), None)?;
    let fine = h.call(0, 2, ECHO, Bytes::from_static(b"c"), None)?;
    let crash_at = std::cell::Cell::new(None);
    h.pump(Duration::from_secs(120), |h| {
        let mut keep = Vec::new();
        for r in std::mem::take(&mut h.requests) {
            if r.rank == 2 {
                h.respond(&r, RpcStatus::Ok, echo(2, &r.payload))?;
            } else {
                keep.push(r);
            }
        }
        h.requests = keep;
        if crash_at.get().is_none() && h.requests.iter().filter(|r| r.rank == 1).count() == 2 {
            crash_at.set(Some(h.c.sim.elapsed()));
            h.c.sim.crash(h.by_rank[1]);
        }
        Ok([(0, doomed0), (2, doomed2), (0, fine)]
            .iter()
            .all(|k| h.done.contains_key(k)))
    })?;
    let lost = Err(OpError::PeerLost { rank: 1 });
    for key in [(0, doomed0), (2, doomed2)] {
        if h.done[&key] != lost {
            return Err(format!("{key:?}: {:?}", h.done[&key]));
        }
    }
    if h.done[&(0, fine)]
        != Ok(Outcome::Rpc {
            data: echo(2, b"c"),
        })
    {
        return Err(format!("answered call: {:?}", h.done[&(0, fine)]));
    }
    if crash_at.get().is_none() {
        return Err("rank 1 never crashed".into());
    }
    match h.command(
        0,
        Command::Rpc {
            to: 1,
            fn_id: ECHO,
            payload: Bytes::new(),
            timeout: None,
        },
    ) {
        Err(CommandError::PeerUnavailable { rank: 1 }) => {}
        other => return Err(format!("call to the dead rank: {other:?}")),
    }
    if h.node(0).stats().rpc_calls != 0 || h.node(2).stats().rpc_calls != 0 {
        return Err("calls left in flight".into());
    }
    Ok(())
}

#[test]
fn a_target_that_crashes_mid_call_fails_with_peer_lost_over_200_seeds() {
    run_seeds(SEEDS, target_crashes);
}

/// Rank 1's handler never answers in time: rank 0's call with a 500 ms deadline fails
/// with `RpcTimeout` at the deadline (not before, and within a tick after); the answer
/// that comes later is ignored and counted. A call without a deadline to the same
/// handler still completes once answered.
fn deadline(seed: u64) -> Result<(), String> {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let mut h = Harness::form(seed, 2, |_, c| c)?;
    h.node(1).register_rpc(ECHO);
    let started = h.c.sim.elapsed();
    let timed = h.call(0, 1, ECHO, Bytes::from_static(b"late"), Some(TIMEOUT))?;
    let patient = h.call(0, 1, ECHO, Bytes::from_static(b"waits"), None)?;
    h.pump(Duration::from_secs(10), |h| {
        Ok(h.done.contains_key(&(0, timed)) && h.requests.len() == 2)
    })?;
    let elapsed = h.c.sim.elapsed() - started;
    if h.done[&(0, timed)]
        != Err(OpError::RpcTimeout {
            rank: 1,
            fn_id: ECHO,
        })
    {
        return Err(format!("timed call: {:?}", h.done[&(0, timed)]));
    }
    if elapsed < TIMEOUT || elapsed > TIMEOUT + Duration::from_millis(50) {
        return Err(format!("timed out after {elapsed:?}"));
    }
    for r in std::mem::take(&mut h.requests) {
        h.respond(&r, RpcStatus::Ok, echo(1, &r.payload))?;
    }
    h.pump(Duration::from_secs(10), |h| {
        Ok(h.done.contains_key(&(0, patient)) && h.node(0).stats().rpc_ignored_responses == 1)
    })?;
    if h.done[&(0, patient)]
        != Ok(Outcome::Rpc {
            data: echo(1, b"waits"),
        })
    {
        return Err(format!("patient call: {:?}", h.done[&(0, patient)]));
    }
    let completions = h.done.keys().filter(|(r, _)| *r == 0).count();
    if completions != 2 {
        return Err(format!("rank 0 saw {completions} completions"));
    }
    Ok(())
}

#[test]
fn deadlines_fail_calls_with_rpc_timeout_over_200_seeds() {
    run_seeds(SEEDS, deadline);
}

/// Rank 1 holds at most 3 unanswered requests per caller. Rank 0 makes 5 calls at once:
/// the first 3 reach the application, the last 2 fail `Overloaded` without reaching it,
/// while rank 2's call (its own budget) gets through. Once answered, a new call from rank
/// 0 gets through again.
fn overload(seed: u64) -> Result<(), String> {
    const BOUND: usize = 3;
    let mut h = Harness::form(seed, 3, |_, mut c| {
        c.max_rpc_inbound = BOUND;
        c
    })?;
    h.node(1).register_rpc(ECHO);
    let ops: Vec<OpId> = (0..5u8)
        .map(|i| h.call(0, 1, ECHO, Bytes::from(vec![i]), None))
        .collect::<Result<_, _>>()?;
    let other = h.call(2, 1, ECHO, Bytes::from_static(b"two"), None)?;
    h.pump(Duration::from_secs(10), |h| {
        Ok(h.requests.len() == BOUND + 1
            && ops[BOUND..].iter().all(|op| h.done.contains_key(&(0, *op))))
    })?;
    for op in &ops[BOUND..] {
        let want = Err(OpError::RpcFailed {
            rank: 1,
            fn_id: ECHO,
            status: RpcStatus::Overloaded,
            detail: Bytes::new(),
        });
        if h.done[&(0, *op)] != want {
            return Err(format!("call {op:?}: {:?}", h.done[&(0, *op)]));
        }
    }
    let mut firsts: Vec<u8> = h
        .requests
        .iter()
        .filter(|r| r.from == 0)
        .map(|r| r.payload[0])
        .collect();
    firsts.sort_unstable();
    if firsts != [0, 1, 2] {
        return Err(format!("admitted {firsts:?}"));
    }
    if h.node(1).stats().rpc_overloaded != 2 {
        return Err(format!("{:?}", h.node(1).stats()));
    }
    for r in std::mem::take(&mut h.requests) {
        h.respond(&r, RpcStatus::Ok, echo(1, &r.payload))?;
    }
    let again = h.call(0, 1, ECHO, Bytes::from_static(b"again"), None)?;
    h.pump(Duration::from_secs(10), |h| {
        for r in std::mem::take(&mut h.requests) {
            h.respond(&r, RpcStatus::Ok, echo(1, &r.payload))?;
        }
        Ok(h.done.contains_key(&(0, again))
            && h.done.contains_key(&(2, other))
            && ops.iter().all(|op| h.done.contains_key(&(0, *op))))
    })?;
    for (i, op) in ops[..BOUND].iter().enumerate() {
        if h.done[&(0, *op)]
            != Ok(Outcome::Rpc {
                data: echo(1, &[i as u8]),
            })
        {
            return Err(format!("call {i}: {:?}", h.done[&(0, *op)]));
        }
    }
    if h.done[&(0, again)]
        != Ok(Outcome::Rpc {
            data: echo(1, b"again"),
        })
        || h.done[&(2, other)]
            != Ok(Outcome::Rpc {
                data: echo(1, b"two"),
            })
    {
        return Err("later calls failed".into());
    }
    Ok(())
}

#[test]
fn each_caller_is_bounded_by_overloaded_over_200_seeds() {
    run_seeds(SEEDS, overload);
}

/// Rank 1 posts no receive while rank 0 sends it tagged data past its unmatched limit,
/// so rank 1 stops reading rank 0's point-to-point stream. An RPC from rank 0 to rank 1
/// still completes: it travels on its own stream.
fn passes_paused_p2p(seed: u64) -> Result<(), String> {
    const LIMIT: usize = 32 << 10;
    let mut h = Harness::form(seed, 2, |_, mut c| {
        c.max_unmatched_bytes = LIMIT;
        c
    })?;
    h.node(1).register_rpc(ECHO);
    let chunk = Bytes::from(vec![7u8; 16 << 10]);
    for _ in 0..8 {
        h.command(
            0,
            Command::Send {
                comm: CommId::WORLD,
                to: 1,
                tag: 3,
                data: chunk.clone(),
            },
        )
        .map_err(|e| format!("send: {e}"))?;
    }
    // Let the flood arrive and the stream pause.
    h.pump(Duration::from_secs(10), |h| {
        Ok(h.node(1).stats().unmatched_bytes > LIMIT)
    })?;
    let call = h.call(0, 1, ECHO, Bytes::from_static(b"ping"), None)?;
    h.pump(Duration::from_secs(10), |h| {
        for r in std::mem::take(&mut h.requests) {
            h.respond(&r, RpcStatus::Ok, echo(1, &r.payload))?;
        }
        Ok(h.done.contains_key(&(0, call)))
    })?;
    if h.done[&(0, call)]
        != Ok(Outcome::Rpc {
            data: echo(1, b"ping"),
        })
    {
        return Err(format!("{:?}", h.done[&(0, call)]));
    }
    let unmatched = h.node(1).stats().unmatched_bytes;
    if unmatched >= 8 * chunk.len() {
        return Err(format!(
            "the p2p stream was never paused ({unmatched} bytes unmatched)"
        ));
    }
    Ok(())
}

#[test]
fn a_call_passes_a_paused_point_to_point_stream_over_200_seeds() {
    run_seeds(SEEDS, passes_paused_p2p);
}

/// Same seed, same trace, bit for bit, with RPC traffic.
#[test]
fn rpc_runs_are_deterministic() {
    let run = |seed| {
        let mut h = Harness::form(seed, 3, |_, c| c).expect("formed");
        let _ = concurrent_calls_on(&mut h);
        h.c.sim.trace_hash()
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}

/// A short RPC workload on a formed harness (for the determinism check).
fn concurrent_calls_on(h: &mut Harness) -> Result<(), String> {
    for r in 0..3 {
        h.node(r).register_rpc(ECHO);
    }
    let ops: Vec<(u32, OpId)> = (0..3u32)
        .map(|r| {
            Ok((
                r,
                h.call(r, (r + 1) % 3, ECHO, Bytes::from(vec![r as u8; 100]), None)?,
            ))
        })
        .collect::<Result<_, String>>()?;
    h.pump(Duration::from_secs(10), |h| {
        for r in std::mem::take(&mut h.requests) {
            h.respond(&r, RpcStatus::Ok, echo(r.rank, &r.payload))?;
        }
        Ok(ops.iter().all(|k| h.done.contains_key(k)))
    })
}
