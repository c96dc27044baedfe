//! The netns test's network: a bridge in the root namespace, one namespace per node joined
//! to it by a veth pair on an isolated port, all deleted on drop; and the relay bound on
//! the bridge, the only way between the nodes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use crate::common::relay::Relay;
use crate::{
    report, BRIDGE_IP, FAULTS, FIRST_HOST, FIRST_PORT_BASE, NODES, PORT_ATTEMPTS, RELAY_LIFETIME,
};

#[derive(Debug)]
pub enum SetupError {
    /// The system cannot do it: skip.
    Unavailable(String),
    /// It should have worked: fail.
    Failed(String),
}

pub(super) fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn node_ip(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, FIRST_HOST + k as u8))
}

/// The bridge, the namespaces and their veths; all deleted on drop.
#[derive(Debug)]
pub struct Net {
    pub bridge: String,
    bridge_created: bool,
    pub namespaces: Vec<String>,
    veths: Vec<String>,
}

impl Net {
    pub fn create(tag: &str) -> Result<Self, SetupError> {
        use SetupError::{Failed, Unavailable};
        let mut net = Net {
            bridge: format!("{tag}br"),
            bridge_created: false,
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        let in_use = Command::new("ip")
            .args(["-o", "addr", "show", "to", "198.18.0.0/24"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !in_use.is_empty() {
            return Err(Unavailable(format!(
                "198.18.0.0/24 is already in use here: {in_use}"
            )));
        }
        let bridge = net.bridge.clone();
        run_ip(&["link", "add", "name", &bridge, "type", "bridge"])
            .map_err(|e| Unavailable(format!("cannot create a bridge: {e}")))?;
        net.bridge_created = true;
        run_ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", &bridge]).map_err(Failed)?;
        run_ip(&["link", "set", &bridge, "up"]).map_err(Failed)?;
        for (k, name) in NODES.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            run_ip(&["netns", "add", &ns])
                .map_err(|e| Unavailable(format!("cannot create a namespace: {e}")))?;
            net.namespaces.push(ns.clone());
            let veth = format!("{tag}h{k}");
            run_ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])
            .map_err(|e| Unavailable(format!("cannot create a veth pair: {e}")))?;
            net.veths.push(veth.clone());
            run_ip(&["link", "set", &veth, "master", &bridge]).map_err(Failed)?;
            // Isolated ports reach the bridge (the relay) but not each other: every
            // datagram between nodes has to go through the relay.
            run_ip(&[
                "link",
                "set",
                "dev",
                &veth,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ])
            .map_err(|e| Unavailable(format!("no bridge port isolation: {e}")))?;
            run_ip(&["link", "set", &veth, "up"]).map_err(Failed)?;
            let addr = format!("{}/24", node_ip(k));
            for args in [
                vec!["-n", &ns, "addr", "add", &addr, "dev", "eth0"],
                vec!["-n", &ns, "link", "set", "eth0", "up"],
                vec!["-n", &ns, "link", "set", "lo", "up"],
            ] {
                run_ip(&args).map_err(Failed)?;
            }
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for veth in &self.veths {
            let _ = run_ip(&["link", "del", veth]);
        }
        for ns in &self.namespaces {
            if let Err(e) = run_ip(&["netns", "del", ns]) {
                report(&format!("netns: teardown: {e}"));
            }
        }
        if self.bridge_created {
            if let Err(e) = run_ip(&["link", "del", &self.bridge]) {
                report(&format!("netns: teardown: {e}"));
            }
        }
    }
}

/// Bind the relay, node `k`'s front on `198.18.0.1:(base + k)`; node `k` then uses the
/// same port in its namespace, which a worker advertising `0.0.0.0:port` relies on.
pub fn start_relay(seed: u64) -> (Relay, Vec<u16>) {
    let mut last_error = None;
    for attempt in 0..PORT_ATTEMPTS {
        let base = FIRST_PORT_BASE + 100 * attempt;
        let ports: Vec<u16> = (0..NODES.len()).map(|k| base + k as u16).collect();
        let real: Vec<SocketAddr> = ports
            .iter()
            .enumerate()
            .map(|(k, p)| SocketAddr::new(node_ip(k), *p))
            .collect();
        match Relay::start(
            IpAddr::V4(BRIDGE_IP),
            &real,
            &ports,
            FAULTS,
            seed,
            RELAY_LIFETIME,
        ) {
            Ok(relay) => return (relay, ports),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last_error = Some(e),
            Err(e) => panic!("starting the relay: {e}"),
        }
    }
    panic!("starting the relay: no free ports ({last_error:?})");
}
