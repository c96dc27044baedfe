//! The join ticket: everything a worker needs to find and trust the seed.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// What the seed hands out (printed, or put in `NEXAR_JOIN`) so workers can join.
///
/// - `addr`: where the seed listens.
/// - `secret`: 256 bits the driver drew from the OS CSPRNG. It never crosses the wire:
///   the worker proves it knows it with an HMAC over the TLS session's exported keying
///   material, so a recorded Hello is useless on any other connection.
/// - `pin`: SHA-256 of the seed's bootstrap public key (SubjectPublicKeyInfo). The worker
///   accepts the seed's TLS certificate only if its key hashes to this, so a man in the
///   middle with any other key fails the handshake before the worker says anything.
///
/// Text form: `nexar1-<secret hex>-<pin hex>@<addr>`; treat it like a password.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTicket {
    /// The seed's address.
    pub addr: SocketAddr,
    /// The cluster's join secret.
    pub secret: [u8; 32],
    /// SHA-256 of the seed's bootstrap SubjectPublicKeyInfo.
    pub pin: [u8; 32],
}

impl fmt::Debug for JoinTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("JoinTicket")
            .field("addr", &self.addr)
            .field("pin", &hex(&self.pin))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for JoinTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nexar1-{}-{}@{}",
            hex(&self.secret),
            hex(&self.pin),
            self.addr
        )
    }
}

/// Why a ticket string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// The text does not start with `nexar1-` (another format or version).
    #[error("not a nexar join ticket (expected it to start with `nexar1-`)")]
    BadPrefix,
    /// No `@<addr>` part, or the address does not parse.
    #[error("bad seed address in join ticket: {0:?}")]
    BadAddress(String),
    /// The secret or pin is not 64 hex digits.
    #[error("bad {field} in join ticket: expected 64 hex digits")]
    BadHex {
        /// `secret` or `pin`.
        field: &'static str,
    },
}

impl FromStr for JoinTicket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .trim()
            .strip_prefix("nexar1-")
            .ok_or(TicketError::BadPrefix)?;
        let (keys, addr) = rest
            .split_once('@')
            .ok_or_else(|| TicketError::BadAddress(String::new()))?;
        let addr = addr
            .parse()
            .map_err(|_| TicketError::BadAddress(addr.to_string()))?;
        let (secret, pin) = keys
            .split_once('-')
            .ok_or(TicketError::BadHex { field: "pin" })?;
        Ok(Self {
            addr,
            secret: unhex(secret).ok_or(TicketError::BadHex { field: "secret" })?,
            pin: unhex(pin).ok_or(TicketError::BadHex { field: "pin" })?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    // Hex digits only: `from_str_radix` alone would also take a leading `+`, giving one
    // ticket several spellings.
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for addr in ["192.0.2.1:4433", "[2001:db8::1]:9000"] {
            let t = JoinTicket {
                addr: addr.parse().unwrap(),
                secret: [0xab; 32],
                pin: [7; 32],
            };
            assert_eq!(t.to_string().parse::<JoinTicket>().unwrap(), t);
        }
    }

    #[test]
    fn refuses_bad_tickets_with_typed_errors() {
        assert_eq!("x".parse::<JoinTicket>(), Err(TicketError::BadPrefix));
        let bad_hex = format!("nexar1-{}-{}@192.0.2.1:1", "zz".repeat(32), "00".repeat(32));
        assert_eq!(
            bad_hex.parse::<JoinTicket>(),
            Err(TicketError::BadHex { field: "secret" })
        );
        let bad_addr = format!("nexar1-{}-{}@nowhere", "00".repeat(32), "00".repeat(32));
        assert!(matches!(
            bad_addr.parse::<JoinTicket>(),
            Err(TicketError::BadAddress(_))
        ));
        let plus = format!(
            "nexar1-+a{}-{}@192.0.2.1:1",
            "00".repeat(31),
            "00".repeat(32)
        );
        assert!(plus.parse::<JoinTicket>().is_err());
        // Multi-byte UTF-8 must not panic on slicing.
        let utf8 = format!("nexar1-{}-{}@192.0.2.1:1", "é".repeat(32), "00".repeat(32));
        assert!(utf8.parse::<JoinTicket>().is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = JoinTicket {
            addr: "192.0.2.1:1".parse().unwrap(),
            secret: [0xab; 32],
            pin: [7; 32],
        };
        assert!(!format!("{t:?}").contains("abab"));
    }
}
