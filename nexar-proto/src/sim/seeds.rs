//! Running a test over many seeds, and replaying the one that failed.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The environment variable that pins [`seeds`] to one seed, to replay a failure.
pub const SEED_ENV: &str = "NEXAR_SIM_SEED";

/// The seeds a simulation test should run: only `$NEXAR_SIM_SEED` if it is set, else
/// `0..default_count`.
///
/// A failure found by sweeping seeds is then replayed, exactly, by setting the variable:
/// the run is a pure function of the seed.
///
/// # Panics
/// If `NEXAR_SIM_SEED` is set but is not a `u64`: silently running other seeds would hide
/// that the replay did not happen.
pub fn seeds(default_count: u64) -> impl Iterator<Item = u64> {
    // The one environment read in the core: a test harness knob, never protocol input.
    #[allow(clippy::disallowed_methods)]
    let pinned = std::env::var(SEED_ENV).ok();
    let (first, last) = match pinned {
        Some(text) => match text.trim().parse::<u64>() {
            Ok(seed) => (seed, seed),
            Err(e) => panic!("{SEED_ENV}={text:?} is not a u64 seed: {e}"),
        },
        None if default_count == 0 => (1, 0), // empty
        None => (0, default_count - 1),
    };
    first..=last
}

/// Run `test` for every seed of [`seeds`]`(count)`; on the first failure (an `Err` or a
/// panic), panic with the seed and the command that replays it.
///
/// Panics inside `test` are caught so the report always names the seed, however deep
/// the failure was. The replay hint names the current test when the test harness runs
/// it on a thread named after it (as `cargo test` does).
pub fn run_seeds(count: u64, test: impl FnMut(u64) -> Result<(), String>) {
    let test_name = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_owned);
    if let Err(report) = first_failure(seeds(count), test, test_name.as_deref()) {
        panic!("{report}");
    }
}

/// Run seeds in order until one fails; the error is the report `run_seeds` panics with.
fn first_failure(
    seeds: impl IntoIterator<Item = u64>,
    mut test: impl FnMut(u64) -> Result<(), String>,
    test_name: Option<&str>,
) -> Result<(), String> {
    for seed in seeds {
        let outcome = match catch_unwind(AssertUnwindSafe(|| test(seed))) {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(non-string panic payload)".to_owned());
                format!("panicked: {message}")
            }
        };
        let filter = test_name.map_or(String::new(), |n| format!(" {n} -- --exact"));
        return Err(format!(
            "simulation failed with seed {seed}: {outcome}\n\
             replay with: {SEED_ENV}={seed} cargo test{filter}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_first_failing_seed_with_a_replay_command() {
        let mut ran = Vec::new();
        let report = first_failure(
            0..10,
            |seed| {
                ran.push(seed);
                if seed == 3 {
                    Err("three is bad".into())
                } else {
                    Ok(())
                }
            },
            Some("sim::x"),
        )
        .unwrap_err();
        assert_eq!(ran, [0, 1, 2, 3], "stops at the first failure");
        assert!(report.contains("seed 3: three is bad"), "{report}");
        assert!(
            report.contains("NEXAR_SIM_SEED=3 cargo test sim::x -- --exact"),
            "{report}"
        );
    }

    #[test]
    fn catches_panics_and_names_their_seed() {
        let report = first_failure(
            5..9,
            |seed| {
                assert!(seed != 7, "invariant broken at seed {seed}");
                Ok(())
            },
            None,
        )
        .unwrap_err();
        assert!(
            report.contains("seed 7: panicked: invariant broken"),
            "{report}"
        );
        assert!(report.contains("NEXAR_SIM_SEED=7 cargo test"), "{report}");
    }

    #[test]
    fn run_seeds_panics_with_the_report() {
        // Fails on every seed, so the outcome does not depend on NEXAR_SIM_SEED being set.
        let caught = catch_unwind(|| run_seeds(4, |_| Err("always".into()))).unwrap_err();
        let message = caught.downcast_ref::<String>().expect("formatted panic");
        assert!(message.contains("NEXAR_SIM_SEED="), "{message}");
        assert!(message.contains("always"), "{message}");
        assert!(
            message.contains("run_seeds_panics_with_the_report"),
            "{message}"
        );
    }

    #[test]
    fn passing_seeds_do_not_panic() {
        run_seeds(3, |_| Ok(()));
    }
}
