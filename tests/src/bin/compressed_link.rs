//! Compressed all-reduce on a bandwidth-limited simulated link: virtual time and bytes on
//! the wire per step for top-k and random-k at 1%, 10% and 100% density, and no
//! compression, on 4 ranks (1 MiB of f32 per rank, 100 Mbit/s links with 1 ms latency).
//!
//! `cargo run --release -p nexar-tests --bin compressed_link`

use std::time::Duration;

use nexar_proto::sim::{ClusterSim, LinkConfig};
use nexar_tests::support::form;
use nexar_tests::training::{measure, Scheme};

fn main() -> Result<(), String> {
    let (ranks, n, steps) = (4u32, 1usize << 18, 3u64);
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        bandwidth_bps: Some(100_000_000),
        ..LinkConfig::default()
    };
    println!("{ranks} ranks, {n} f32 per rank, 100 Mbit/s links, 1 ms latency, {steps} steps");
    println!(
        "{:<14} {:>8} {:>14} {:>16}",
        "compressor", "density", "virtual ms/step", "wire KiB/step"
    );
    let mut schemes = vec![("none", 1.0, Scheme::Dense)];
    for d in [0.01, 0.1, 1.0] {
        schemes.push(("top-k", d, Scheme::TopK(d)));
        schemes.push(("random-k", d, Scheme::RandomK(d, 42)));
    }
    for (name, density, scheme) in schemes {
        let mut c = ClusterSim::with_workers(1, ranks, link);
        let by_rank = form(&mut c)?;
        let cost = measure(&mut c, &by_rank, scheme, n, steps)?;
        println!(
            "{name:<14} {:>7}% {:>14.1} {:>16.0}",
            density * 100.0,
            cost.per_step.as_secs_f64() * 1e3,
            cost.bytes_per_step as f64 / 1024.0
        );
    }
    Ok(())
}
