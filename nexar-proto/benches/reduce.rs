//! Reduction kernels on 64 MiB, beside the plain `a[i] += b[i]` loop they must keep up
//! with (target: the f32 sum kernel within 80% of it). Compare the ratios of one run.
//!
//! `cargo bench -p nexar-proto --bench reduce`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::{bf16, f16};
use nexar_proto::codec::ReduceOp;
use nexar_proto::collective::buffer::{reduce_le, reduce_slice};
use nexar_proto::collective::Element;

const BYTES: usize = 64 << 20;

fn plain_loop(c: &mut Criterion) {
    let n = BYTES / 4;
    let mut a = vec![1.0f32; n];
    let b = vec![2.0f32; n];
    let mut g = c.benchmark_group("f32_sum_64MiB");
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.sample_size(10);
    g.bench_function("plain_loop", |bench| {
        bench.iter(|| {
            for i in 0..n {
                a[i] += b[i];
            }
            black_box(&mut a);
        })
    });
    g.bench_function("reduce_slice", |bench| {
        bench.iter(|| reduce_slice(black_box(&mut a), black_box(&b), ReduceOp::Sum))
    });
    let wire: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
    g.bench_function("reduce_le", |bench| {
        bench.iter(|| reduce_le(black_box(&mut a), black_box(&wire), ReduceOp::Sum))
    });
    g.finish();
}

fn kernel<T: Element>(c: &mut Criterion, name: &str, one: T) {
    let n = BYTES / T::SIZE;
    let mut a = vec![one; n];
    let b = vec![one; n];
    let mut g = c.benchmark_group(format!("{name}_64MiB"));
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.sample_size(10);
    for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Min, ReduceOp::Max] {
        g.bench_with_input(
            BenchmarkId::new("reduce_slice", format!("{op:?}")),
            &op,
            |bench, op| bench.iter(|| reduce_slice(black_box(&mut a), black_box(&b), *op)),
        );
    }
    g.finish();
}

fn kernels(c: &mut Criterion) {
    kernel(c, "f32", 1.0f32);
    kernel(c, "f64", 1.0f64);
    kernel(c, "f16", f16::ONE);
    kernel(c, "bf16", bf16::ONE);
    kernel(c, "i8", 1i8);
    kernel(c, "u8", 1u8);
    kernel(c, "i32", 1i32);
    kernel(c, "u32", 1u32);
    kernel(c, "i64", 1i64);
    kernel(c, "u64", 1u64);
}

criterion_group!(benches, plain_loop, kernels);
criterion_main!(benches);
