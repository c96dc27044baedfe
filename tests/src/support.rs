//! Helpers shared by the simulator scenarios: links, formation checks, key material.

use std::collections::BTreeMap;
use std::time::Duration;

use nexar_proto::crypto::DetRng;
use nexar_proto::sim::{ClusterSim, HostId, LinkConfig, LossModel};
use nexar_proto::{Event, NodeConfig};

/// How long formation may take: a worker's default `formation_timeout`.
pub const FORMATION_LIMIT: Duration = Duration::from_secs(60);

/// A clean datacenter link: 200 µs one way, nothing lost.
pub fn lan() -> LinkConfig {
    LinkConfig::with_latency(Duration::from_micros(200))
}

/// A bad link: 1 ms plus up to `jitter` one way (so datagrams reorder), Bernoulli
/// `loss` and `duplicate` probability.
pub fn lossy(loss: f64, duplicate: f64, jitter: Duration) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(1),
        jitter,
        loss: LossModel::Bernoulli(loss),
        duplicate,
        ..LinkConfig::default()
    }
}

/// Check a formed cluster: every worker in `workers` is `Ready` exactly once with a
/// distinct rank, the ranks are exactly `0..n`, world size and epoch agree, all peer tables
/// are identical and name each rank's real address, and the seed formed once.
///
/// Returns the hosts in rank order.
pub fn check_formed(c: &ClusterSim, workers: &[HostId]) -> Result<Vec<HostId>, String> {
    let n = u32::try_from(workers.len()).map_err(|e| e.to_string())?;
    let mut by_rank: BTreeMap<u32, HostId> = BTreeMap::new();
    let mut epochs = Vec::new();
    for &w in workers {
        let readies: Vec<_> = c
            .events(w)
            .iter()
            .filter(|e| matches!(e, Event::Ready { .. }))
            .collect();
        if readies.len() != 1 {
            return Err(format!("{w} emitted {} Ready events", readies.len()));
        }
        let (rank, world, epoch) = c.ready(w).ok_or("no Ready")?;
        if world != n {
            return Err(format!("{w}: world size {world}, expected {n}"));
        }
        if let Some(e) = c
            .events(w)
            .iter()
            .find(|e| matches!(e, Event::JoinFailed { .. }))
        {
            return Err(format!("{w} both Ready and {e:?}"));
        }
        let node = c.node(w).ok_or("not a node")?;
        if node.rank() != Some(rank) || node.world_size() != Some(n) || !node.is_ready() {
            return Err(format!("{w}: getters disagree with its Ready event"));
        }
        if let Some(other) = by_rank.insert(rank, w) {
            return Err(format!("rank {rank} given to both {other} and {w}"));
        }
        epochs.push(epoch);
    }
    let ranks: Vec<u32> = by_rank.keys().copied().collect();
    if ranks != (0..n).collect::<Vec<_>>() {
        return Err(format!("ranks {ranks:?} are not 0..{n}"));
    }
    if epochs.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("epochs differ: {epochs:?}"));
    }
    let expected: Vec<_> = by_rank.iter().map(|(r, h)| (*r, c.sim.addr(*h))).collect();
    for &w in workers {
        let table = c.node(w).and_then(|n| n.peers()).ok_or("no peer table")?;
        if table != expected {
            return Err(format!("{w}: peer table {table:?}, expected {expected:?}"));
        }
    }
    let formed: Vec<_> = c
        .events(c.seed)
        .iter()
        .filter_map(|e| match e {
            Event::ClusterFormed { world_size, epoch } => Some((*world_size, *epoch)),
            _ => None,
        })
        .collect();
    if formed != [(n, epochs[0])] {
        return Err(format!(
            "seed formed {formed:?}, expected once with ({n}, {})",
            epochs[0]
        ));
    }
    if c.node(c.seed).and_then(|s| s.world_size()) != Some(n) {
        return Err("seed's world_size getter disagrees".into());
    }
    Ok(by_rank.into_values().collect())
}

/// Run until every worker is ready; then [`check_formed`].
pub fn form(c: &mut ClusterSim) -> Result<Vec<HostId>, String> {
    let workers = c.workers.clone();
    if !c.run_until_ready(&workers, FORMATION_LIMIT) {
        let pending: Vec<_> = workers
            .iter()
            .filter(|w| c.ready(**w).is_none())
            .map(|w| (w, c.events(*w).to_vec()))
            .collect();
        return Err(format!(
            "not formed after {:?}; not ready: {pending:?}; seed: {:?}",
            c.sim.elapsed(),
            c.events(c.seed)
        ));
    }
    check_formed(c, &workers)
}

/// The Ed25519 private-key seed a node with this config holds: the first 32 bytes of its
/// `identity` stream, as `NodeIdentity::generate` draws them.
pub fn identity_key_seed(config: &NodeConfig) -> [u8; 32] {
    DetRng::derive(&config.rng_seed, "identity").array()
}

/// The cluster CA's private-key seed on a seed node with this config: the `cluster`
/// stream draws the 16-byte cluster id, then the CA key's 32 bytes.
pub fn ca_key_seed(config: &NodeConfig) -> [u8; 32] {
    let mut rng = DetRng::derive(&config.rng_seed, "cluster");
    let _cluster_id: [u8; 16] = rng.array();
    rng.array()
}

/// The DER prefix of every PKCS#8 v1 Ed25519 private key.
pub const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A small deterministic generator (SplitMix64) for test workloads.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A tagged payload of `len` bytes (at least 16) that names itself: `from`, `to`, `tag`
/// and `index` as little-endian u32s, then filler that depends on all four.
pub fn tagged_payload(from: u32, to: u32, tag: u64, index: u32, len: usize) -> bytes::Bytes {
    let mut out = Vec::with_capacity(len.max(16));
    for v in [from, to, tag as u32, index] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut x = u64::from(index) << 32 | u64::from(from) << 16 | u64::from(to) << 8 | tag;
    while out.len() < len {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        out.push((x >> 56) as u8);
    }
    out.into()
}
