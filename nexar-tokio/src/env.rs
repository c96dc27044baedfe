//! Configuration from the environment, for launchers.
//!
//! | what | variables, highest precedence first |
//! |---|---|
//! | join ticket | `NEXAR_JOIN` (the ticket text), `NEXAR_JOIN_FILE` (a file holding it) |
//! | world size | `NEXAR_WORLD_SIZE`, torchrun's `WORLD_SIZE`, Slurm's `SLURM_NTASKS` |
//! | rank | `NEXAR_RANK`, torchrun's `RANK`, Slurm's `SLURM_PROCID` |
//! | seed address | torchrun's `MASTER_ADDR` + `MASTER_PORT` |
//!
//! Each value is taken from the first variable of its row that is set, so `NEXAR_*`
//! overrides torchrun, which overrides Slurm; a set but malformed variable is an error
//! ([`EnvError::Invalid`]), never skipped.
//!
//! **What torchrun and Slurm cannot give.** They name a rendezvous address and each
//! process's rank and world size, but no join secret and no pin of the seed's key, and
//! nexar does not form a cluster without both (that is the point of the ticket). So a
//! ticket is always needed: start one seed (e.g. on the `MASTER_ADDR` host, listening on
//! `MASTER_ADDR:MASTER_PORT`) with `nexar seed --ticket-file F` on a file every worker can
//! read, and give the workers `NEXAR_JOIN_FILE=F` (or the text in `NEXAR_JOIN`). The file
//! must exist when the workers start: launch them after the seed printed its ticket. The
//! rank and world size from the launcher are then used as the requested rank (the seed
//! grants it, or rejects the joiner if another took it) and as a check of the world size
//! the cluster formed with ([`EnvError::WorldSizeMismatch`]).
//!
//! The ticket file is the cluster's password: it is refused unless it is owned by this
//! user and neither group nor others may read or write it (the seed writes it so). Prefer
//! it to `NEXAR_JOIN` or `--join`: on a shared host, a process's command line is visible
//! to every user, and its environment to the same user and root.

use std::net::{SocketAddr, ToSocketAddrs};

use nexar_proto::JoinTicket;

use crate::api::{Client, Config, EnvError, Joining, NexarError};

/// What the launcher's environment says about this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaunchEnv {
    /// The join ticket, if `NEXAR_JOIN` or `NEXAR_JOIN_FILE` is set.
    pub ticket: Option<JoinTicket>,
    /// The world size and the variable it came from.
    pub world_size: Option<(u32, &'static str)>,
    /// This process's rank and the variable it came from.
    pub rank: Option<(u32, &'static str)>,
    /// torchrun's rendezvous address (`MASTER_ADDR:MASTER_PORT`): where a launcher should
    /// start the seed. Workers still need the ticket.
    pub master_addr: Option<SocketAddr>,
}

impl LaunchEnv {
    /// Read the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Read variables through `get` (the process environment in [`from_env`](Self::from_env),
    /// a map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let get = |name: &'static str| get(name).map(|v| (name, v));
        let ticket = match (get("NEXAR_JOIN"), get("NEXAR_JOIN_FILE")) {
            (Some((var, text)), _) => Some(parse_ticket(var, &text)?),
            (None, Some((_, path))) => Some(Self::ticket_file(std::path::Path::new(&path))?),
            (None, None) => None,
        };
        let first = |names: [&'static str; 3]| names.into_iter().find_map(get);
        let world_size = first(["NEXAR_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS"])
            .map(|(var, v)| parse_u32(var, &v, 1).map(|n| (n, var)))
            .transpose()?;
        let rank = first(["NEXAR_RANK", "RANK", "SLURM_PROCID"])
            .map(|(var, v)| parse_u32(var, &v, 0).map(|n| (n, var)))
            .transpose()?;
        if let (Some((rank, rank_var)), Some((world_size, world_var))) = (rank, world_size) {
            if rank >= world_size {
                return Err(EnvError::RankOutOfRange {
                    rank,
                    rank_var,
                    world_size,
                    world_var,
                });
            }
        }
        let master_addr = match (get("MASTER_ADDR"), get("MASTER_PORT")) {
            (Some((_, host)), Some((port_var, port))) => {
                let port: u16 = port.trim().parse().map_err(|_| EnvError::Invalid {
                    var: port_var,
                    value: port.clone(),
                    reason: "not a port number".into(),
                })?;
                Some(resolve(&host, port)?)
            }
            (Some((_, host)), None) => Some(resolve(&host, 29500)?),
            _ => None,
        };
        Ok(Self {
            ticket,
            world_size,
            rank,
            master_addr,
        })
    }

    /// Read a join ticket from the file at `path` (what `nexar seed --ticket-file` wrote),
    /// refusing a file another local user could have read or planted.
    pub fn ticket_file(path: &std::path::Path) -> Result<JoinTicket, EnvError> {
        let failed = |detail: String| EnvError::TicketFile {
            path: path.display().to_string(),
            detail,
        };
        let bytes = match crate::state_file::read(path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(failed("no such file".into())),
            Err(e) => return Err(failed(e.to_string())),
        };
        let text = String::from_utf8(bytes).map_err(|_| failed("not UTF-8 text".into()))?;
        parse_ticket("NEXAR_JOIN_FILE", &text)
    }

    /// `config` with the requested rank from the environment (if any, and if the config
    /// does not already request one).
    pub fn apply(&self, mut config: Config) -> Config {
        if config.node.requested_rank.is_none() {
            config.node.requested_rank = self.rank.map(|(r, _)| r);
        }
        config
    }
}

/// Join the cluster the environment names: the ticket from `NEXAR_JOIN`/`NEXAR_JOIN_FILE`,
/// the requested rank from `NEXAR_RANK`/`RANK`/`SLURM_PROCID`, and a check that the cluster
/// formed with the announced world size.
pub async fn join_from_env(config: Config) -> Result<Client, NexarError> {
    let env = LaunchEnv::from_env()?;
    let ticket = env.ticket.clone().ok_or(EnvError::MissingTicket)?;
    let client = Joining::start(&ticket, &env.apply(config))?
        .finish()
        .await?;
    if let Some((expected, var)) = env.world_size {
        if expected != client.world_size() {
            return Err(EnvError::WorldSizeMismatch {
                expected,
                var,
                actual: client.world_size(),
            }
            .into());
        }
    }
    Ok(client)
}

fn parse_ticket(var: &'static str, text: &str) -> Result<JoinTicket, EnvError> {
    text.trim()
        .parse()
        .map_err(|e: nexar_proto::TicketError| EnvError::Invalid {
            var,
            // The text holds the secret: never echo it.
            value: "<redacted>".into(),
            reason: e.to_string(),
        })
}

fn parse_u32(var: &'static str, value: &str, min: u32) -> Result<u32, EnvError> {
    match value.trim().parse::<u32>() {
        Ok(n) if n >= min => Ok(n),
        Ok(_) => Err(EnvError::Invalid {
            var,
            value: value.into(),
            reason: format!("must be at least {min}"),
        }),
        Err(e) => Err(EnvError::Invalid {
            var,
            value: value.into(),
            reason: e.to_string(),
        }),
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, EnvError> {
    let host = host.trim();
    let bad = |reason: String| EnvError::Invalid {
        var: "MASTER_ADDR",
        value: host.into(),
        reason,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(vars: &[(&str, &str)]) -> Result<LaunchEnv, EnvError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|k| map.get(k).cloned())
    }

    fn ticket_text() -> String {
        format!(
            "nexar1-{}-{}@127.0.0.1:4000",
            "ab".repeat(32),
            "cd".repeat(32)
        )
    }

    #[test]
    fn nexar_beats_torchrun_beats_slurm() {
        let e = env(&[
            ("SLURM_NTASKS", "8"),
            ("SLURM_PROCID", "7"),
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
        ])
        .unwrap();
        assert_eq!(e.world_size, Some((4, "WORLD_SIZE")));
        assert_eq!(e.rank, Some((3, "RANK")));
        let e = env(&[
            ("WORLD_SIZE", "4"),
            ("NEXAR_WORLD_SIZE", "2"),
            ("NEXAR_RANK", "1"),
        ])
        .unwrap();
        assert_eq!(e.world_size, Some((2, "NEXAR_WORLD_SIZE")));
        assert_eq!(e.rank, Some((1, "NEXAR_RANK")));
        let e = env(&[("SLURM_NTASKS", "8"), ("SLURM_PROCID", "7")]).unwrap();
        assert_eq!(e.rank, Some((7, "SLURM_PROCID")));
        assert_eq!(env(&[]).unwrap(), LaunchEnv::default());
    }

    #[test]
    fn ticket_and_master_addr() {
        let t = ticket_text();
        let e = env(&[
            ("NEXAR_JOIN", &t),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29400"),
        ])
        .unwrap();
        assert_eq!(e.ticket.unwrap().to_string(), t);
        assert_eq!(e.master_addr, Some("127.0.0.1:29400".parse().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticket");
        crate::state_file::write(&path, format!("{t}\n").as_bytes()).unwrap();
        let e = env(&[("NEXAR_JOIN_FILE", path.to_str().unwrap())]).unwrap();
        assert_eq!(e.ticket.unwrap().to_string(), t);
        #[cfg(unix)]
        {
            // Readable by others: refused, naming the file and why, without the secret.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = env(&[("NEXAR_JOIN_FILE", path.to_str().unwrap())]).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, EnvError::TicketFile { .. }), "{err:?}");
            assert!(
                text.contains(path.to_str().unwrap()) && text.contains("644"),
                "{text}"
            );
            assert!(!text.contains(&t), "{text}");
        }
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert!(matches!(
            env(&[("NEXAR_RANK", "x")]),
            Err(EnvError::Invalid {
                var: "NEXAR_RANK",
                ..
            })
        ));
        assert!(matches!(
            env(&[("WORLD_SIZE", "0")]),
            Err(EnvError::Invalid {
                var: "WORLD_SIZE",
                ..
            })
        ));
        assert!(matches!(
            env(&[("RANK", "4"), ("WORLD_SIZE", "4")]),
            Err(EnvError::RankOutOfRange { rank: 4, .. })
        ));
        assert!(matches!(
            env(&[("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "http")]),
            Err(EnvError::Invalid {
                var: "MASTER_PORT",
                ..
            })
        ));
        let err = env(&[("NEXAR_JOIN", "nexar1-secret")]).unwrap_err();
        assert!(!err.to_string().contains("secret-"), "{err}");
        assert!(matches!(
            env(&[("NEXAR_JOIN_FILE", "/nonexistent/nexar-ticket")]),
            Err(EnvError::TicketFile { .. })
        ));
    }
}
