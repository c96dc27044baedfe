//! The wire codec alone: frames encoded and decoded per second.
//!
//! Three frame shapes a cluster sends most: a heartbeat (control, tiny), a collective
//! chunk with an 8-byte payload (latency-bound collectives) and one with a 256 KiB payload
//! (the executor's default segment). Decoding goes through [`FrameDecoder`] as a stream
//! does: a buffer of many back-to-back frames pushed at once, then every message polled
//! (`stream`), or pushed in the 65 000-byte slices QUIC hands over on loopback, polling
//! after each (`slices`: frames cross slice boundaries, as received chunks do).
//! The throughput is in frames (`elem/s`); for the 256 KiB chunk also read it as bytes.
//!
//! `cargo bench -p nexar-proto --bench codec`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nexar_proto::codec::{
    Algorithm, Chunk, ChunkHeader, CollectiveKind, DType, Fingerprint, FrameDecoder, Heartbeat,
    Limits, Message, ReduceOp,
};

/// Frames per iteration: enough that per-iteration overhead vanishes.
const BATCH: usize = 256;

/// Stream data per QUIC read on loopback (one datagram's STREAM frame, 64 KiB packets).
const SLICE: usize = 65_000;

fn chunk(payload: usize) -> Message {
    Message::Chunk(Chunk {
        header: ChunkHeader {
            epoch: 1,
            comm: 0,
            seq: 42,
            algorithm: Algorithm::Ring,
            step: 3,
            offset: 1 << 20,
        },
        fingerprint: Some(Fingerprint {
            kind: CollectiveKind::AllReduce,
            dtype: DType::F32,
            op: ReduceOp::Sum,
            count: 1 << 24,
            root: 0,
            algorithm: Algorithm::Ring,
        }),
        payload: vec![7u8; payload].into(),
    })
}

fn shapes() -> Vec<(&'static str, Message)> {
    vec![
        (
            "heartbeat",
            Message::Heartbeat(Heartbeat { epoch: 1, seq: 9 }),
        ),
        ("chunk_8B", chunk(8)),
        ("chunk_256KiB", chunk(256 << 10)),
    ]
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, msg) in shapes() {
        // The transport path: header and fields into one buffer, the bulk payload handed
        // on by reference (what `Transport::send` queues), as the node does.
        g.bench_with_input(BenchmarkId::new("prefix", name), &msg, |b, msg| {
            let mut out = BytesMut::with_capacity(BATCH * 128);
            b.iter(|| {
                out.clear();
                for _ in 0..BATCH {
                    black_box(msg.encode_prefix(&mut out));
                }
            })
        });
        // The whole frame as one buffer (what `Message::to_frame` gives the executor).
        g.bench_with_input(BenchmarkId::new("to_frame", name), &msg, |b, msg| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(msg.to_frame());
                }
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30);
    for (name, msg) in shapes() {
        let mut stream = BytesMut::new();
        for _ in 0..BATCH {
            msg.encode(&mut stream);
        }
        let stream = stream.freeze();
        g.bench_with_input(BenchmarkId::new("stream", name), &stream, |b, stream| {
            b.iter(|| {
                let mut d = FrameDecoder::new(Limits::DEFAULT);
                d.push_bytes(stream.clone());
                let mut n = 0;
                while let Some(m) = d.poll_message().expect("valid frames") {
                    black_box(m);
                    n += 1;
                }
                assert_eq!(n, BATCH);
            })
        });
        let slices: Vec<_> = (0..stream.len())
            .step_by(SLICE)
            .map(|at| stream.slice(at..(at + SLICE).min(stream.len())))
            .collect();
        g.bench_with_input(BenchmarkId::new("slices", name), &slices, |b, slices| {
            b.iter(|| {
                let mut d = FrameDecoder::new(Limits::DEFAULT);
                let mut n = 0;
                for s in slices {
                    d.push_bytes(s.clone());
                    while let Some(m) = d.poll_message().expect("valid frames") {
                        black_box(m);
                        n += 1;
                    }
                }
                assert_eq!(n, BATCH);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
