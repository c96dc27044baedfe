use super::*;

fn apply(vars: &[(&str, &str)]) -> Result<Config, EnvError> {
    Config::default().apply_env_vars(vars.iter().copied())
}

fn debug(c: &Config) -> String {
    format!("{c:?}")
}

/// What a knob needs beside it to be tried at its bounds alone: the heartbeat's
/// interval and timeout are also held to each other.
fn companion(var: &str) -> Option<(&'static str, &'static str)> {
    match var {
        "NEXAR_HEARTBEAT_INTERVAL_MS" => Some(("NEXAR_HEARTBEAT_TIMEOUT_MS", "86400000")),
        "NEXAR_HEARTBEAT_TIMEOUT_MS" => Some(("NEXAR_HEARTBEAT_INTERVAL_MS", "1")),
        _ => None,
    }
}

#[test]
fn every_bound_is_accepted_exactly_at_and_refused_one_past() {
    for knob in KNOBS.iter().filter(|k| k.unit != Unit::Policy) {
        for n in [knob.min, knob.max] {
            let value = n.to_string();
            let vars: Vec<(&str, &str)> = companion(knob.var)
                .into_iter()
                .chain([(knob.var, value.as_str())])
                .collect();
            apply(&vars).unwrap_or_else(|e| panic!("{}={value} refused: {e}", knob.var));
        }
        let mut past = vec![knob.max + 1];
        if knob.min > 0 {
            past.push(knob.min - 1);
        }
        for n in past {
            let value = n.to_string();
            let err = apply(&[(knob.var, &value)]).unwrap_err();
            assert_eq!(
                err,
                EnvError::OutOfRange {
                    var: knob.var,
                    value: value.clone(),
                    min: knob.min,
                    max: knob.max,
                }
            );
            let text = err.to_string();
            assert!(text.contains(knob.var) && text.contains(&value), "{text}");
        }
    }
}

#[test]
fn the_documented_default_of_every_knob_is_the_real_default() {
    let defaults = debug(&Config::default());
    let mut checked = 0;
    for knob in KNOBS {
        let Some(default) = knob.default else {
            continue;
        };
        let tuned = apply(&[(knob.var, default)]).expect("the default is in bounds");
        assert_eq!(debug(&tuned), defaults, "{}={default}", knob.var);
        checked += 1;
    }
    assert_eq!(
        checked,
        KNOBS.len() - 1,
        "only NEXAR_MAX_WORLD_SIZE has no number"
    );
}

#[test]
fn the_module_table_and_the_readme_list_every_knob_with_its_default() {
    let module = include_str!("tuning.rs");
    let readme = include_str!("../../README.md");
    for knob in KNOBS {
        let cell = format!("| `{}` |", knob.var);
        let row = module
            .lines()
            .find(|l| l.starts_with("//! ") && l.contains(&cell))
            .unwrap_or_else(|| panic!("{} missing from the module's table", knob.var));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | variable | unit | default | bounds | sets |
        if let Some(default) = knob.default {
            assert_eq!(cells[3], default, "{row}");
        }
        if knob.unit != Unit::Policy {
            assert_eq!(cells[4], format!("{}..={}", knob.min, knob.max), "{row}");
        }
        assert!(
            readme.contains(knob.var),
            "{} missing from README",
            knob.var
        );
    }
}

#[test]
fn values_land_in_the_fields_they_name() {
    let c = apply(&[
        ("NEXAR_COLLECTIVE_TIMEOUT_MS", "1500"),
        ("NEXAR_IDLE_TIMEOUT_MS", "9000"),
        ("NEXAR_RPC_TIMEOUT_MS", "250"),
        ("NEXAR_RECOVERY", "Automatic"),
        ("NEXAR_MAX_WORLD_SIZE", "12"),
        ("NEXAR_MIN_WORLD_SIZE", "3"),
        ("NEXAR_SEGMENT_BYTES", "65536"),
        ("NEXAR_LINGER_MS", "0"),
        ("NEXAR_MAX_UDP_PAYLOAD", "1200"),
    ])
    .unwrap();
    assert_eq!(c.node.collective_timeout, Duration::from_millis(1500));
    assert_eq!(c.node.idle_timeout, Duration::from_secs(9));
    assert_eq!(c.node.keep_alive, Duration::from_secs(3));
    assert_eq!(c.node.rpc_timeout, Some(Duration::from_millis(250)));
    assert_eq!(c.node.recovery, RecoveryPolicy::Automatic);
    assert_eq!(c.max_world_size, Some(12));
    assert_eq!(c.node.min_world_size, 3);
    assert_eq!(c.node.collective.segment_bytes, 65536);
    assert_eq!(c.linger, Duration::ZERO);
    assert_eq!((c.node.max_udp_payload, c.node.initial_mtu), (1200, 1200));
    // 0 turns the default RPC deadline off.
    let c = apply(&[("NEXAR_RPC_TIMEOUT_MS", "0")]).unwrap();
    assert_eq!(c.node.rpc_timeout, None);
    // Over a config built in code: the environment wins where it speaks, only there.
    let code = Config::default().with_collective_timeout(Duration::from_secs(7));
    let c = code
        .apply_env_vars([("NEXAR_RPC_TIMEOUT_MS", "100")])
        .unwrap();
    assert_eq!(c.node.collective_timeout, Duration::from_secs(7));
    assert_eq!(c.node.rpc_timeout, Some(Duration::from_millis(100)));
}

#[test]
fn malformed_values_are_typed_errors_naming_the_variable_and_value() {
    for bad in ["5s", "", " ", "-1", "1.5", "0x10", "1e3", "５"] {
        let err = apply(&[("NEXAR_COLLECTIVE_TIMEOUT_MS", bad)]).unwrap_err();
        assert!(
            matches!(&err, EnvError::Invalid { var: "NEXAR_COLLECTIVE_TIMEOUT_MS", value, .. } if value == bad),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("NEXAR_COLLECTIVE_TIMEOUT_MS"));
    }
    // Past u64: out of range, not a parse failure.
    let huge = "99999999999999999999999";
    assert!(matches!(
        apply(&[("NEXAR_SEGMENT_BYTES", huge)]),
        Err(EnvError::OutOfRange {
            var: "NEXAR_SEGMENT_BYTES",
            ..
        })
    ));
    let err = apply(&[("NEXAR_RECOVERY", "sometimes")]).unwrap_err();
    assert!(matches!(
        err,
        EnvError::Invalid {
            var: "NEXAR_RECOVERY",
            ..
        }
    ));
    assert!(
        err.to_string().contains("abort, automatic, manual"),
        "{err}"
    );
    // Surrounding whitespace from a shell script is fine.
    let c = apply(&[("NEXAR_HEARTBEAT_TIMEOUT_MS", " 8000\n")]).unwrap();
    assert_eq!(c.node.heartbeat_timeout, Duration::from_secs(8));
}

#[test]
fn unknown_nexar_names_are_refused_with_the_closest_knob() {
    let err = apply(&[("NEXAR_COLECTIVE_TIMEOUT_MS", "5000")]).unwrap_err();
    assert_eq!(
        err,
        EnvError::Unknown {
            var: "NEXAR_COLECTIVE_TIMEOUT_MS".into(),
            closest: Some("NEXAR_COLLECTIVE_TIMEOUT_MS"),
        }
    );
    assert!(
        err.to_string().contains("NEXAR_COLLECTIVE_TIMEOUT_MS"),
        "{err}"
    );
    assert_eq!(
        apply(&[("NEXAR_FROBNICATE", "1")]).unwrap_err(),
        EnvError::Unknown {
            var: "NEXAR_FROBNICATE".into(),
            closest: None,
        }
    );
    // nexar's other variables, and everything not NEXAR_, pass untouched.
    let others: Vec<(&str, &str)> = OTHER_VARIABLES
        .iter()
        .map(|v| (*v, "not a number"))
        .chain([("HOME", "/root"), ("nexar_collective_timeout_ms", "x")])
        .collect();
    assert_eq!(debug(&apply(&others).unwrap()), debug(&Config::default()));
}

#[test]
fn the_heartbeat_interval_must_stay_below_its_timeout() {
    // At the default timeout (5000 ms): 4999 is accepted, 5000 is not.
    let c = apply(&[("NEXAR_HEARTBEAT_INTERVAL_MS", "4999")]).unwrap();
    assert_eq!(c.node.heartbeat_interval, Duration::from_millis(4999));
    let err = apply(&[("NEXAR_HEARTBEAT_INTERVAL_MS", "5000")]).unwrap_err();
    assert!(matches!(err, EnvError::Conflict { .. }), "{err:?}");
    let err = apply(&[("NEXAR_HEARTBEAT_TIMEOUT_MS", "1000")]).unwrap_err();
    assert!(matches!(err, EnvError::Conflict { .. }), "{err:?}");
    // Both moved together: judged on the final values, whatever the order.
    let c = apply(&[
        ("NEXAR_HEARTBEAT_INTERVAL_MS", "20000"),
        ("NEXAR_HEARTBEAT_TIMEOUT_MS", "60000"),
    ])
    .unwrap();
    assert_eq!(c.node.heartbeat_timeout, Duration::from_secs(60));
}
