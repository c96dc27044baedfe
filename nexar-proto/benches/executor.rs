//! A whole allreduce through the real executor of every rank, in memory: planning,
//! segmenting, framing, decoding, plan checks and reductions, with no QUIC, TLS or socket
//! (`nexar_proto::collective::loopback`). The gap between this and the CLI bench over
//! loopback is what the transport costs.
//!
//! Throughput is the nccl-tests bus bandwidth numerator per iteration (`size × 2(n-1)/n`
//! bytes), so criterion's `GiB/s` reads as busbw with all ranks on one core.
//!
//! `cargo bench -p nexar-proto --bench executor`

// The core bans the wall clock; a bench reads the wall clock to hand the core an instant.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use nexar_proto::codec::{CollectiveKind, ReduceOp};
use nexar_proto::collective::loopback::run_collective;
use nexar_proto::collective::select::CollectiveConfig;
use nexar_proto::collective::Buffer;

fn allreduce(c: &mut Criterion) {
    let config = CollectiveConfig::default();
    let mut g = c.benchmark_group("allreduce_in_memory");
    g.sample_size(10);
    for world in [2u32, 4, 8] {
        for bytes in [8usize, 64 << 10, 1 << 20, 16 << 20] {
            let count = bytes / 4;
            let bus = bytes as u64 * 2 * u64::from(world - 1) / u64::from(world);
            g.throughput(Throughput::Bytes(bus.max(1)));
            let inputs: Vec<Buffer> = (0..world)
                .map(|r| Buffer::from_vec(vec![r as f32; count]))
                .collect();
            g.bench_with_input(
                BenchmarkId::new(format!("{world}ranks"), bytes),
                &inputs,
                |b, inputs| {
                    // The inputs are cloned outside the timed part: the executor takes
                    // ownership of them, as `Command::Collective` does.
                    b.iter_batched(
                        || inputs.clone(),
                        |inputs| {
                            let out = run_collective(
                                Instant::now(),
                                CollectiveKind::AllReduce,
                                ReduceOp::Sum,
                                0,
                                count,
                                inputs,
                                &config,
                            )
                            .expect("allreduce");
                            black_box(out)
                        },
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, allreduce);
criterion_main!(benches);
