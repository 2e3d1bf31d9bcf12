//! Channel URIs: `shm:NAME?key=value&...` and `udp://HOST:PORT?key=value&...`.
//!
//! Parsing is strict: every malformed piece gets an [`Error::InvalidUri`]
//! that names it, and a parameter the channel does not know is an error, not
//! silently ignored (see [`ChannelUri::finish`]). The URI layer only parses;
//! each limit (a ring's capacity, a message length, a slot count) is checked
//! once, by the layer that owns it, and a value out of range is still an
//! [`Error::InvalidUri`] naming the option.
//!
//! Sizes take a binary unit: `4096`, `64k`, `1m`, `2MiB`, `1g`. Durations
//! need one: `100ns`, `50us`, `250ms`, `2s`.
//!
//! # `shm:NAME` options
//!
//! `NAME` is 1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 . _ -`, not starting with
//! `.`. All options are optional:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `capacity` | ring data bytes, a power of two from 256 to 64g (publication) | `1m` |
//! | `max_msg` | largest payload, at most `capacity/2 - 16` (publication) | `capacity/8` |
//! | `subscribers` | subscriber slots, 1 to 1024 (publication) | 64 |
//! | `publishers` | publishers attached at once, 1 to 64 (publication; see below) | 1 |
//! | `mode` | octal file mode of the ring file, including owner `rw` (publication) | `600` |
//! | `dir` | directory of ring files | `$CONDUIT_SHM_DIR` or `/dev/shm` |
//! | `wait` | `spin`, `yield` or `block`: how [`Subscription::poll_timeout`](crate::Subscription::poll_timeout) waits | `spin` |
//! | `owners` | comma-separated uids, besides the process's own, whose rings a subscription attaches to (subscription; at most 64) | none |
//! | `slow` | `block` or `evict`: what the publisher does with a subscriber that holds it back (publication; see below) | `block` |
//! | `evict_after` | with `slow=evict`: how long a subscriber may hold the publisher back, a duration with a unit, 1ns to 1h (publication) | `1s` |
//! | `history` | bytes of the most recent messages kept readable for `from=history` joiners, a size (publication; see below) | `0` |
//! | `from` | `live` or `history`: where a subscription starts (subscription) | `live` |
//!
//! A subscription accepts the publication's options too (so one URI can
//! serve both sides) and ignores them: the publisher's ring header is the
//! truth. A publication accepts `owners` and ignores it.
//!
//! ```
//! # fn main() -> Result<(), conduit::Error> {
//! # let name = format!("doc-uri-{}", std::process::id());
//! let uri = format!("shm:{name}?capacity=64k&max_msg=4k&subscribers=4&wait=block");
//! let publ = conduit::Publication::open(&uri)?;
//! assert_eq!(publ.max_message_len(), 4096);
//! // Out of range: refused by the ring, reported against the option.
//! let e = conduit::Publication::open(&format!("shm:{name}-b?capacity=1000")).unwrap_err();
//! assert!(e.to_string().contains("capacity"), "{e}");
//! # Ok(()) }
//! ```
//!
//! ## Several publishers
//!
//! With `publishers=N` (N > 1) any process may open a [`crate::Publication`]
//! on the name while fewer than N are attached; the first creates the ring,
//! the others attach to it (its capacity and limits win over theirs), and
//! one more is [`Error::TooManyPublishers`]. Each message is appended
//! atomically; subscribers see one total order that keeps each publisher's
//! own order, and [`crate::Received::source`] names the publisher (its slot
//! index and pid). A publisher killed while holding a claim delays the
//! others and the subscribers by about a millisecond (at most tens of
//! milliseconds for a subscriber asleep in `wait=block`); its claim is
//! skipped, everything it committed is delivered. `max_msg` is at most
//! 16 MiB - 256 then. The channel closes when its last publisher closes.
//! `publishers=1` (the default) keeps the single-writer ring, whose data
//! path is unchanged. `slow=`, `evict_after=` and `history=` work with
//! several publishers too; the settings of the publication that created
//! the channel hold for all of them.
//!
//! ## Slow subscribers
//!
//! With `slow=block` (the default) nothing is ever overwritten: the slowest
//! subscription back-pressures the publication ([`Error::BackPressured`]).
//! With `slow=evict&evict_after=DURATION`, a subscription that has held the
//! publication back for longer than `evict_after` is cut loose, as Aeron's
//! untethered subscriptions are: the publication and the other
//! subscriptions go on. The evicted subscription's next poll that finds it
//! rejoined returns [`Error::Evicted`] once, with the bytes it missed, and
//! later polls deliver live messages. On an evicting channel a subscription
//! copies each message out of the ring and checks that it was not evicted
//! before handing it over, so it never sees a message overwritten under it
//! (`slow=block` channels keep zero-copy reads). `evict_after` without
//! `slow=evict` is [`Error::InvalidUri`].
//!
//! ## Late-join history
//!
//! `history=BYTES` makes the ring keep at least that many bytes of the most
//! recent messages readable (records count with their 16-byte header,
//! rounded up to 32 bytes). The capacity must allow it: at most `capacity`
//! less `capacity/32` and less twice the largest record (or 1 KiB), else
//! [`Error::InvalidUri`] naming the limit. A subscription with
//! `from=history` starts at the oldest whole message inside that window
//! (never a torn one, also while the publication writes); the default,
//! `from=live`, receives what is published after it joined. With no
//! history on the channel, `from=history` is `from=live`.
//!
//! ## Who may own a ring
//!
//! The ring directory is shared by every local user, and whoever owns the
//! file under a name writes every byte its subscribers read. So a
//! subscription attaches only to a ring file owned by its own effective uid
//! or one listed in `owners`; any other owner is [`Error::ForeignOwner`]
//! naming that uid. A publication never touches a file of another uid under
//! its name: it gets the same error, naming the squatter. The directory's
//! sticky bit (as on `/dev/shm`) keeps others from removing or renaming a
//! user's ring; a `dir` without it should not be writable by others.
//!
//! A ring is created with its memory reserved, so a full directory is
//! [`Error::Io`] (`ENOSPC`, [`std::io::ErrorKind::StorageFull`]) at open, not
//! a crash later. A ring file truncated by another process under a live
//! handle makes that handle report [`Error::Corrupt`]; it never kills the
//! process (see `conduit-ringbuf`'s mapping docs for the one exception: a
//! program that replaces conduit's SIGBUS handler).
//!
//! # `udp://HOST:PORT` options
//!
//! Listed in [`crate::udp::options`].

use crate::Error;
use std::time::Duration;

/// Longest URI accepted, in bytes.
pub const MAX_URI_LEN: usize = 1024;
/// Longest shared-memory channel name, in bytes (the ring's limit).
pub const MAX_NAME_LEN: usize = conduit_ringbuf::MAX_NAME_LEN;

/// What a URI points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// A shared-memory ring on this host.
    Shm {
        /// The ring's name: ASCII letters, digits, `.`, `_` and `-`.
        name: String,
    },
    /// A UDP stream.
    Udp {
        /// Host name or address (IPv6 without its brackets).
        host: String,
        /// UDP port.
        port: u16,
    },
}

/// A parsed channel URI whose parameters are taken one by one by the
/// transport that opens it.
#[derive(Debug, Clone)]
pub struct ChannelUri {
    uri: String,
    /// What the URI points at.
    pub scheme: Scheme,
    params: Vec<(String, String)>,
}

/// The URI grammar of a name: its characters. Its length and a leading `.`
/// are the ring's to refuse (`conduit_ringbuf::validate_name`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ChannelUri {
    /// Parses `uri`.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// use conduit::uri::{ChannelUri, Scheme};
    /// let uri = ChannelUri::parse("udp://[::1]:4000?mtu=9000")?;
    /// assert_eq!(uri.scheme, Scheme::Udp { host: "::1".into(), port: 4000 });
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] naming what is wrong: unknown scheme, bad name,
    /// host or port, a malformed or repeated parameter.
    pub fn parse(uri: &str) -> Result<ChannelUri, Error> {
        let bad = |reason: String| Error::invalid_uri(uri, reason);
        if uri.len() > MAX_URI_LEN {
            return Err(bad(format!("longer than {MAX_URI_LEN} bytes")));
        }
        if let Some(c) = uri.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad(format!("contains the character {c:?}")));
        }
        let (base, query) = match uri.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (uri, None),
        };
        let scheme = if let Some(name) = base.strip_prefix("shm:") {
            let name = name.strip_prefix("//").unwrap_or(name);
            if !valid_name(name) {
                return Err(bad(format!(
                    "shared-memory name {name:?} must be A-Z a-z 0-9 . _ - (and not start with .)"
                )));
            }
            Scheme::Shm {
                name: name.to_owned(),
            }
        } else if let Some(rest) = base.strip_prefix("udp://") {
            let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
                let (h, p) = v6
                    .split_once("]:")
                    .ok_or_else(|| bad("IPv6 host must be written [ADDR]:PORT".into()))?;
                (h, p)
            } else {
                rest.rsplit_once(':')
                    .ok_or_else(|| bad("expected udp://HOST:PORT".into()))?
            };
            if host.is_empty() || host.len() > 253 || host.contains(['/', '@', '[', ']']) {
                return Err(bad(format!("bad host {host:?}")));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| bad(format!("bad port {port:?}: expected 0 to 65535")))?;
            Scheme::Udp {
                host: host.to_owned(),
                port,
            }
        } else {
            let shown: String = base.chars().take(16).collect();
            return Err(bad(format!(
                "unknown scheme in {shown:?}: expected shm:NAME or udp://HOST:PORT"
            )));
        };
        let mut params: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad(format!("parameter {pair:?} has no '=value'")))?;
                if k.is_empty() || v.is_empty() {
                    return Err(bad(format!("parameter {pair:?} needs a key and a value")));
                }
                if params.iter().any(|(pk, _)| pk == k) {
                    return Err(bad(format!("parameter {k:?} given twice")));
                }
                params.push((k.to_owned(), v.to_owned()));
            }
        }
        Ok(ChannelUri {
            uri: uri.to_owned(),
            scheme,
            params,
        })
    }

    /// The URI as given.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let uri = conduit::uri::ChannelUri::parse("shm:orders?capacity=64k")?;
    /// assert_eq!(uri.as_str(), "shm:orders?capacity=64k");
    /// # Ok(()) }
    /// ```
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    fn error(&self, reason: String) -> Error {
        Error::invalid_uri(&self.uri, reason)
    }

    /// Removes and returns parameter `key`'s raw value.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut uri = conduit::uri::ChannelUri::parse("shm:a?dir=/tmp/rings")?;
    /// assert_eq!(uri.take_str("dir").as_deref(), Some("/tmp/rings"));
    /// assert_eq!(uri.take_str("dir"), None); // taken
    /// # Ok(()) }
    /// ```
    pub fn take_str(&mut self, key: &str) -> Option<String> {
        let i = self.params.iter().position(|(k, _)| k == key)?;
        Some(self.params.remove(i).1)
    }

    /// Takes a size such as `4096`, `64k`, `1m`, `2MiB` (binary multiples).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut uri = conduit::uri::ChannelUri::parse("shm:a?capacity=2MiB")?;
    /// assert_eq!(uri.take_size("capacity")?, Some(2 << 20));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] if the value is not a size.
    pub fn take_size(&mut self, key: &str) -> Result<Option<usize>, Error> {
        let Some(v) = self.take_str(key) else {
            return Ok(None);
        };
        parse_size(&v)
            .map(Some)
            .ok_or_else(|| self.error(format!("{key}={v:?} is not a size (e.g. 4096, 64k, 1m)")))
    }

    /// Takes a duration with a unit: `100ns`, `50us`, `250ms`, `2s`.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// use std::time::Duration;
    /// let mut uri = conduit::uri::ChannelUri::parse("udp://h:1?liveness=250ms")?;
    /// assert_eq!(uri.take_duration("liveness")?, Some(Duration::from_millis(250)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] if the value is not a duration with a unit.
    pub fn take_duration(&mut self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(v) = self.take_str(key) else {
            return Ok(None);
        };
        parse_duration(&v).map(Some).ok_or_else(|| {
            self.error(format!(
                "{key}={v:?} is not a duration with a unit (ns, us, ms, s), e.g. 250ms"
            ))
        })
    }

    /// Takes an unsigned integer.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut uri = conduit::uri::ChannelUri::parse("shm:a?subscribers=8")?;
    /// assert_eq!(uri.take_u64("subscribers")?, Some(8));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] if the value is not an unsigned integer.
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>, Error> {
        let Some(v) = self.take_str(key) else {
            return Ok(None);
        };
        v.parse()
            .map(Some)
            .map_err(|_| self.error(format!("{key}={v:?} is not an unsigned integer")))
    }

    /// Takes one of `allowed`.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut uri = conduit::uri::ChannelUri::parse("shm:a?wait=block")?;
    /// let wait = uri.take_choice("wait", &["spin", "yield", "block"])?;
    /// assert_eq!(wait.as_deref(), Some("block"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] listing the allowed values.
    pub fn take_choice(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>, Error> {
        let Some(v) = self.take_str(key) else {
            return Ok(None);
        };
        if allowed.contains(&v.as_str()) {
            Ok(Some(v))
        } else {
            Err(self.error(format!(
                "{key}={v:?}: expected one of {}",
                allowed.join(", ")
            )))
        }
    }

    /// Builds an [`Error::InvalidUri`] for this URI (for checks a transport
    /// makes on values it took).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let uri = conduit::uri::ChannelUri::parse("shm:a")?;
    /// let e = uri.invalid("no good");
    /// assert!(e.to_string().contains("no good"));
    /// # Ok(()) }
    /// ```
    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        self.error(reason.into())
    }

    /// Ends parsing.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut uri = conduit::uri::ChannelUri::parse("shm:a?capacity=4k&colour=red")?;
    /// uri.take_size("capacity")?;
    /// let e = uri.finish().unwrap_err(); // nobody took colour=
    /// assert!(e.to_string().contains("colour"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] naming every parameter nobody took.
    pub fn finish(self) -> Result<(), Error> {
        if self.params.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        Err(self.error(format!("unknown parameter(s): {}", keys.join(", "))))
    }
}

fn parse_size(v: &str) -> Option<usize> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits.parse().ok()?;
    let mult: usize = match unit {
        "" | "b" | "B" => 1,
        "k" | "K" | "KiB" | "kb" | "KB" => 1 << 10,
        "m" | "M" | "MiB" | "mb" | "MB" => 1 << 20,
        "g" | "G" | "GiB" | "gb" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "ns" => Duration::from_nanos(n),
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(uri: &str) -> String {
        match ChannelUri::parse(uri) {
            Err(e) => e.to_string(),
            Ok(u) => match u.finish() {
                Err(e) => e.to_string(),
                Ok(()) => panic!("{uri:?} parsed"),
            },
        }
    }

    #[test]
    fn parses_shm_and_udp() {
        let mut u = ChannelUri::parse("shm:orders?capacity=64k&wait=block").unwrap();
        assert_eq!(
            u.scheme,
            Scheme::Shm {
                name: "orders".into()
            }
        );
        assert_eq!(u.take_size("capacity").unwrap(), Some(65536));
        assert_eq!(
            u.take_choice("wait", &["spin", "block"])
                .unwrap()
                .as_deref(),
            Some("block")
        );
        u.finish().unwrap();
        let u = ChannelUri::parse("udp://10.0.0.2:40123").unwrap();
        assert_eq!(
            u.scheme,
            Scheme::Udp {
                host: "10.0.0.2".into(),
                port: 40123
            }
        );
        let u = ChannelUri::parse("udp://[::1]:9").unwrap();
        assert_eq!(
            u.scheme,
            Scheme::Udp {
                host: "::1".into(),
                port: 9
            }
        );
        let mut u = ChannelUri::parse("udp://h:1?liveness=250ms&nak_delay=50us").unwrap();
        assert_eq!(
            u.take_duration("liveness").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            u.take_duration("nak_delay").unwrap(),
            Some(Duration::from_micros(50))
        );
    }

    #[test]
    fn every_malformed_uri_is_named() {
        for (uri, needle) in [
            ("", "unknown scheme"),
            ("tcp://h:1", "unknown scheme"),
            ("shm:", "shared-memory name"),
            ("shm:../etc/passwd", "shared-memory name"),
            ("shm:a/b", "shared-memory name"),
            ("shm:a b", "character"),
            ("shm:a\n", "character"),
            ("udp://host", "HOST:PORT"),
            ("udp://:1", "bad host"),
            ("udp://h:70000", "bad port"),
            ("udp://h:-1", "bad port"),
            ("udp://[::1:5", "IPv6"),
            ("shm:a?capacity", "no '=value'"),
            ("shm:a?=1", "key and a value"),
            ("shm:a?x=1&x=2", "twice"),
            ("shm:a?bogus=1", "unknown parameter"),
        ] {
            let e = err(uri);
            assert!(e.contains(needle), "{uri:?}: {e}");
        }
        let long = format!("shm:{}", "a".repeat(2000));
        assert!(err(&long).contains("longer than"));
        let mut u = ChannelUri::parse("shm:a?capacity=12q&t=5").unwrap();
        assert!(u
            .take_size("capacity")
            .unwrap_err()
            .to_string()
            .contains("not a size"));
        assert!(u
            .take_duration("t")
            .unwrap_err()
            .to_string()
            .contains("unit"));
        let mut u = ChannelUri::parse("shm:a?capacity=99999999999999999999g").unwrap();
        assert!(u.take_size("capacity").is_err());
    }
}
