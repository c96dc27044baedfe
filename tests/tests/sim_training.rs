//! Compressed all-reduce in the simulator: every compressor, every dtype, worlds of 1 to
//! 8 ranks, uneven lengths, several steps of error feedback, each rank's result against
//! the sequential reference of `nexar_tests::training` (compared as encoded bytes, so
//! every rank also holds the same bits).

use half::{bf16, f16};
use nexar_proto::collective::Buffer;
use nexar_proto::compress::{ErrorFeedback, Magnitude};
use nexar_proto::sim::{ClusterSim, HostId, LinkConfig};
use nexar_tests::support::form;
use nexar_tests::training::{input, reference, sim_step, typed, Scheme};

const STEPS: u64 = 3;

fn check<T: Magnitude>(
    c: &mut ClusterSim,
    by_rank: &[HostId],
    scheme: Scheme,
    n: usize,
) -> Result<(), String> {
    let world = by_rank.len() as u32;
    let want = reference(scheme, world, n, STEPS);
    let mut fb: Vec<ErrorFeedback<T>> = (0..world).map(|_| ErrorFeedback::new()).collect();
    for (step, want) in want.iter().enumerate() {
        let inputs: Vec<Vec<T>> = (0..world)
            .map(|r| typed::<T>(&(0..n).map(|i| input(r, step as u64, i)).collect::<Vec<_>>()))
            .collect();
        let got = sim_step(c, by_rank, scheme, &mut fb, &inputs)?;
        let want = Buffer::from_vec(typed::<T>(want));
        for (rank, g) in got.into_iter().enumerate() {
            let g = Buffer::from_vec(g);
            if g.encode_range(0..g.len()) != want.encode_range(0..want.len()) {
                return Err(format!(
                    "{:?} {scheme:?} world {world} n {n} step {step} rank {rank}: got {g:?}, want {want:?}",
                    T::DTYPE
                ));
            }
        }
    }
    Ok(())
}

fn every_dtype(c: &mut ClusterSim, by_rank: &[HostId], scheme: Scheme, n: usize) {
    let r = check::<f32>(c, by_rank, scheme, n)
        .and_then(|_| check::<f64>(c, by_rank, scheme, n))
        .and_then(|_| check::<f16>(c, by_rank, scheme, n))
        .and_then(|_| check::<bf16>(c, by_rank, scheme, n))
        .and_then(|_| check::<i8>(c, by_rank, scheme, n))
        .and_then(|_| check::<u8>(c, by_rank, scheme, n))
        .and_then(|_| check::<i32>(c, by_rank, scheme, n))
        .and_then(|_| check::<u32>(c, by_rank, scheme, n))
        .and_then(|_| check::<i64>(c, by_rank, scheme, n))
        .and_then(|_| check::<u64>(c, by_rank, scheme, n));
    if let Err(e) = r {
        panic!("{e}");
    }
}

#[test]
fn compressed_all_reduce_matches_the_reference_on_1_to_8_ranks() {
    for world in 1..=8u32 {
        let mut c = ClusterSim::with_workers(u64::from(world), world, LinkConfig::default());
        let by_rank = form(&mut c).unwrap_or_else(|e| panic!("world {world}: {e}"));
        // Uneven lengths: not a multiple of the world, a prime, and a single element.
        for n in [13 * world as usize + 5, 1] {
            for scheme in [
                Scheme::Dense,
                Scheme::TopK(0.1),
                Scheme::TopK(1.0),
                Scheme::RandomK(0.25, 99),
            ] {
                every_dtype(&mut c, &by_rank, scheme, n);
            }
        }
    }
}

#[test]
fn an_empty_tensor_sends_nothing_and_gets_nothing() {
    let mut c = ClusterSim::with_workers(3, 3, LinkConfig::default());
    let by_rank = form(&mut c).unwrap();
    for scheme in [Scheme::TopK(0.5), Scheme::RandomK(0.5, 1), Scheme::Dense] {
        let mut fb: Vec<ErrorFeedback<f32>> = (0..3).map(|_| ErrorFeedback::new()).collect();
        let got = sim_step(&mut c, &by_rank, scheme, &mut fb, &vec![Vec::new(); 3]).unwrap();
        assert!(got.iter().all(|g| g.is_empty()));
    }
}
