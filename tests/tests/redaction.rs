//! `Debug` never prints key material: the node's `rng_seed` (every key derives from it)
//! and the join secret, in every type that holds them, formatted plainly and prettily.

use std::time::Instant;

use nexar_proto::codec::{Limits, SeedSnapshot};
use nexar_proto::{Node, NodeConfig, SeedConfig};

/// Bytes no formatter would print by chance, distinct per position.
fn secret_bytes(tag: u8) -> [u8; 32] {
    std::array::from_fn(|i| tag ^ (i as u8).wrapping_mul(37))
}

/// The ways `bytes` could show up in text: `Debug` of the array (one and several lines),
/// lower and upper hex, and the first few bytes as a decimal list.
fn leaks(text: &str, bytes: &[u8; 32]) -> Option<String> {
    let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let decimal = bytes[..4]
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let squashed: String = text.split_whitespace().collect();
    let needles = [
        format!("{bytes:?}"),
        lower.clone(),
        lower.to_uppercase(),
        lower[..16].to_string(),
        decimal.clone(),
        decimal.replace(' ', ""),
    ];
    needles
        .into_iter()
        .find(|n| text.contains(n.as_str()) || squashed.contains(&n.replace(' ', "")))
}

fn check(what: &str, value: &impl std::fmt::Debug, secrets: &[[u8; 32]]) {
    for text in [format!("{value:?}"), format!("{value:#?}")] {
        for s in secrets {
            if let Some(n) = leaks(&text, s) {
                panic!("{what} prints {n:?}:\n{text}");
            }
        }
        assert!(!text.is_empty());
    }
}

#[test]
fn configs_tickets_snapshots_and_nodes_redact_their_secrets() {
    let rng_seed = secret_bytes(0x5a);
    let join_secret = secret_bytes(0xc3);
    let secrets = [rng_seed, join_secret];
    let config = NodeConfig::new(rng_seed, 1_767_225_600, "127.0.0.1:7000".parse().unwrap());
    check("NodeConfig", &config, &secrets);
    let formatted = format!("{config:?}");
    assert!(
        formatted.contains("rng_seed: <redacted>") && formatted.contains("heartbeat_timeout"),
        "the redacted field is named and the others still shown: {formatted}"
    );
    let seed_config = SeedConfig::new(4, join_secret);
    check("SeedConfig", &seed_config, &secrets);

    // Test-only: a starting instant for a node that never runs.
    let now = Instant::now();
    let node = Node::seed(config.clone(), seed_config, now).expect("a seed");
    check("Node (seed)", &node, &secrets);
    let ticket = node.ticket().expect("a ticket").clone();
    assert_eq!(ticket.secret, join_secret);
    check("JoinTicket", &ticket, &secrets);
    let bytes = node.seed_snapshot().expect("a snapshot");
    let snapshot = SeedSnapshot::decode(&bytes, &Limits::default()).expect("decodes");
    assert_eq!(snapshot.rng_seed, rng_seed);
    check("SeedSnapshot", &snapshot, &secrets);
    let restored = Node::seed_restore(config.clone(), &bytes, now).expect("restores");
    check("Node (restored seed)", &restored, &secrets);

    let worker_config = NodeConfig::new(rng_seed, 1_767_225_600, "127.0.0.1:7001".parse().unwrap());
    let worker = Node::worker(worker_config, &ticket, now).expect("a worker");
    check("Node (worker)", &worker, &secrets);

    let driver = nexar_tokio::Config {
        rng_seed: Some(rng_seed),
        node: config,
        ..Default::default()
    };
    check("nexar_tokio::Config", &driver, &secrets);
    let smol = nexar_smol::Config {
        rng_seed: Some(rng_seed),
        ..Default::default()
    };
    check("nexar_smol::Config", &smol, &secrets);
}

/// The check itself finds a secret where there is one.
#[test]
fn the_leak_check_sees_a_printed_secret() {
    let s = secret_bytes(0x11);
    assert!(leaks(&format!("{s:?}"), &s).is_some());
    assert!(leaks(&format!("{s:#?}"), &s).is_some());
    let hex: String = s.iter().map(|b| format!("{b:02X}")).collect();
    assert!(leaks(&hex, &s).is_some());
    assert!(leaks("nothing here", &s).is_none());
}
