//! Measurement tool: unauthenticated attackers against a running `nexar seed`.
//!
//! ```text
//! hostile_client TICKET half-frames N SECONDS [CLAIM]   N connections streaming partial Hellos
//! hostile_client TICKET flood RATE SECONDS              first Initials at RATE per second
//! ```
//!
//! It prints one line of what it did every second (and a summary); watch the seed's memory
//! with `grep VmHWM /proc/PID/status`. Plain sockets cannot spoof source addresses, so the
//! flood sends each Initial from a new socket (a distinct local port) instead.

use std::time::{Duration, Instant};

use nexar_proto::codec::{Hello, Limits};
use nexar_proto::JoinTicket;
use nexar_tests::hostile_net::{flood_initials, HalfFrames};

fn usage() -> ! {
    eprintln!(
        "usage: hostile_client TICKET half-frames N SECONDS [CLAIM]\n       hostile_client TICKET flood RATE SECONDS"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let ticket: JoinTicket = args[0].parse().unwrap_or_else(|e| {
        eprintln!("bad ticket: {e}");
        std::process::exit(2)
    });
    let number = |s: &str| -> u64 { s.parse().unwrap_or_else(|_| usage()) };
    let seconds = Duration::from_secs(number(&args[3]));
    match args[1].as_str() {
        "half-frames" => {
            let n = number(&args[2]) as usize;
            let claim = args
                .get(4)
                .map(|s| number(s) as u32)
                .unwrap_or_else(|| Hello::max_payload_len(&Limits::default()));
            let mut attack = HalfFrames::new(ticket.addr, ticket.pin, n, claim);
            let end = Instant::now() + seconds;
            while Instant::now() < end {
                let tick = (Instant::now() + Duration::from_secs(1)).min(end);
                attack.run_until(tick);
                println!("{:?}", attack.stats());
            }
        }
        "flood" => {
            let rate = number(&args[2]) as u32;
            let sent = flood_initials(ticket.addr, ticket.pin, rate, seconds);
            println!(
                "sent {sent} Initials in {seconds:?} ({:.0}/s)",
                sent as f64 / seconds.as_secs_f64()
            );
        }
        _ => usage(),
    }
}
