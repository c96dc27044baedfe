//! The two costs of this machine that decide how ranks sharing a process should sit on
//! threads (see `nexar local`'s `local` module and ARCHITECTURE.md):
//!
//! - how long a cache line takes to go from one core to another and back: two threads
//!   spin, each waiting for the other's write to one atomic. Every task hand-off between
//!   threads of a multi-thread runtime moves a few such lines.
//! - how long a sleeping thread takes to wake: two threads take turns, each unparking the
//!   other and parking itself. This is what a driver that sleeps between messages pays.
//!
//! `cargo run --release -p nexar-tokio --example machine_probe [rounds]` (default 5): one
//! line per round, so that a change in the host's placement shows between rounds. Run it
//! on an otherwise idle machine with at least two cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// Round trips of one cache line between two spinning threads; nanoseconds each.
fn cache_line_round_trip(trips: u64) -> f64 {
    let flag = Arc::new(AtomicU64::new(0));
    let other = flag.clone();
    let echo = thread::spawn(move || {
        for i in 0..trips {
            while other.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            other.store(2 * i + 2, Ordering::Release);
        }
    });
    let started = Instant::now();
    for i in 0..trips {
        flag.store(2 * i + 1, Ordering::Release);
        while flag.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let took = started.elapsed();
    echo.join().expect("the echo thread");
    took.as_nanos() as f64 / trips as f64
}

/// Round trips of a wake-up between two threads that park while they wait; microseconds
/// each. A wake-up may be spurious, so each side parks until the counter says its turn.
fn wake_round_trip(trips: u64) -> f64 {
    let turn = Arc::new(AtomicU64::new(0));
    let main = thread::current();
    let other = turn.clone();
    let echo = thread::spawn(move || {
        for i in 0..trips {
            while other.load(Ordering::Acquire) != 2 * i + 1 {
                thread::park();
            }
            other.store(2 * i + 2, Ordering::Release);
            main.unpark();
        }
    });
    let echo_thread = echo.thread().clone();
    let started = Instant::now();
    for i in 0..trips {
        turn.store(2 * i + 1, Ordering::Release);
        echo_thread.unpark();
        while turn.load(Ordering::Acquire) != 2 * i + 2 {
            thread::park();
        }
    }
    let took = started.elapsed();
    echo.join().expect("the echo thread");
    took.as_secs_f64() * 1e6 / trips as f64
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    for round in 1..=rounds {
        let line = cache_line_round_trip(1_000_000);
        let wake = wake_round_trip(20_000);
        println!("round {round}: cache line between cores {line:.0} ns round trip; sleeping thread woken {wake:.1} µs round trip");
    }
}
