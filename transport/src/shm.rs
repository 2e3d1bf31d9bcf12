//! `shm:NAME` channels: the shared-memory ring of `conduit-ringbuf` behind the
//! common channel API.
//!
//! URI parameters (all optional):
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `capacity` | ring data bytes, a power of two (publication) | `1m` |
//! | `max_msg` | largest payload, at most `capacity/2 - 16` (publication) | `capacity/8` |
//! | `subscribers` | subscriber slots (publication) | 64 |
//! | `mode` | octal file mode of the ring file (publication) | `600` |
//! | `dir` | directory of ring files | `$CONDUIT_SHM_DIR` or `/dev/shm` |
//! | `wait` | `spin`, `yield` or `block`: how [`crate::Subscription::poll_timeout`] waits | `spin` |
//! | `owners` | comma-separated uids, besides the process's own, whose rings a subscription attaches to (subscription; at most 64) | none |
//! | `slow` | `block` or `evict`: what the publisher does with a subscriber that holds it back (publication; see below) | `block` |
//! | `evict_after` | with `slow=evict`: how long a subscriber may hold the publisher back, a duration with a unit, 1ns to 1h (publication) | `1s` |
//! | `history` | bytes of the most recent messages kept readable for `from=history` joiners, a size (publication; see below) | `0` |
//! | `from` | `live` or `history`: where a subscription starts (subscription) | `live` |
//!
//! A subscription accepts the publication's parameters too (so one URI can
//! serve both sides) and ignores them: the publisher's ring header is the
//! truth. A publication accepts `owners` and ignores it.
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

use crate::uri::ChannelUri;
use crate::{Error, Received};
use conduit_ringbuf as ring;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) struct ShmOptions {
    pub(crate) name: String,
    pub(crate) config: ring::RingConfig,
    pub(crate) wait: ring::WaitStrategy,
    /// Uids besides our own whose rings a subscription attaches to.
    pub(crate) owners: Vec<u32>,
    /// `slow=`, `evict_after=` and `history=` (publication).
    pub(crate) retention: ring::Retention,
    /// `from=` (subscription).
    pub(crate) start: ring::Start,
}

/// Most uids `owners=` may list.
const MAX_OWNERS: usize = 64;

/// Parses `owners=UID,UID...`: decimal uids, at most [`MAX_OWNERS`].
fn parse_owners(uri: &ChannelUri, v: &str) -> Result<Vec<u32>, Error> {
    let mut owners = Vec::new();
    for part in v.split(',') {
        if owners.len() == MAX_OWNERS {
            return Err(uri.invalid(format!("owners= lists more than {MAX_OWNERS} uids")));
        }
        let ok = !part.is_empty() && part.len() <= 10 && part.bytes().all(|b| b.is_ascii_digit());
        let uid = ok
            .then(|| part.parse::<u32>().ok())
            .flatten()
            .filter(|u| *u != u32::MAX)
            .ok_or_else(|| {
                uri.invalid(format!(
                    "owners={v:?}: {part:?} is not a uid (comma-separated decimal uids, e.g. owners=1000,1001)"
                ))
            })?;
        owners.push(uid);
    }
    Ok(owners)
}

pub(crate) fn options(name: String, uri: &mut ChannelUri) -> Result<ShmOptions, Error> {
    let mut config = ring::RingConfig::default();
    if let Some(cap) = uri.take_size("capacity")? {
        if !cap.is_power_of_two() || !(4096..=(1 << 30)).contains(&cap) {
            return Err(uri.invalid(format!(
                "capacity={cap} must be a power of two from 4k to 1g"
            )));
        }
        config.capacity = cap;
        config.max_message_len = cap / 8;
    }
    if let Some(max) = uri.take_size("max_msg")? {
        let limit = ring::layout::max_message_limit(config.capacity as u64) as usize;
        if max > limit {
            return Err(uri.invalid(format!(
                "max_msg={max} exceeds the limit for capacity {} (half the capacity less a record header: {limit})",
                config.capacity
            )));
        }
        config.max_message_len = max;
    }
    if let Some(n) = uri.take_u64("subscribers")? {
        if !(1..=1024).contains(&n) {
            return Err(uri.invalid(format!("subscribers={n} must be 1 to 1024")));
        }
        config.max_subscribers = n as u32;
    }
    if let Some(mode) = uri.take_str("mode") {
        let m = u32::from_str_radix(&mode, 8)
            .ok()
            .filter(|m| *m <= 0o777 && *m & 0o600 == 0o600)
            .ok_or_else(|| {
                uri.invalid(format!(
                    "mode={mode:?} must be octal file permissions including owner rw (e.g. 600, 660)"
                ))
            })?;
        config.mode = m;
    }
    if let Some(dir) = uri.take_str("dir") {
        config.dir = Some(PathBuf::from(dir));
    }
    let owners = match uri.take_str("owners") {
        Some(v) => parse_owners(uri, &v)?,
        None => Vec::new(),
    };
    let (retention, start) = retention(uri, &config)?;
    let wait = match uri
        .take_choice("wait", &["spin", "yield", "block"])?
        .as_deref()
    {
        None | Some("spin") => ring::WaitStrategy::Spin,
        Some("yield") => ring::WaitStrategy::SpinYield,
        _ => ring::WaitStrategy::Block,
    };
    Ok(ShmOptions {
        name,
        config,
        wait,
        owners,
        retention,
        start,
    })
}

/// Default `evict_after` with `slow=evict`.
const DEFAULT_EVICT_AFTER: Duration = Duration::from_secs(1);

/// Parses `slow=`, `evict_after=`, `history=` and `from=`.
fn retention(
    uri: &mut ChannelUri,
    config: &ring::RingConfig,
) -> Result<(ring::Retention, ring::Start), Error> {
    let evict = uri.take_choice("slow", &["block", "evict"])?.as_deref() == Some("evict");
    let after = uri.take_duration("evict_after")?;
    let slow = match (evict, after) {
        (false, None) => ring::SlowPolicy::Block,
        (false, Some(_)) => {
            return Err(uri.invalid("evict_after= needs slow=evict"));
        }
        (true, after) => {
            let after = after.unwrap_or(DEFAULT_EVICT_AFTER);
            if after.is_zero() || after > Duration::from_secs(3600) {
                return Err(uri.invalid(format!("evict_after={after:?} must be from 1ns to 1h")));
            }
            ring::SlowPolicy::Evict { after }
        }
    };
    let history = uri.take_size("history")?.unwrap_or(0) as u64;
    let max = ring::layout::max_history(config.capacity as u64, config.max_message_len as u64);
    if history > max {
        return Err(uri.invalid(format!(
            "history={history} exceeds {max}, the most a ring of capacity {} with max_msg {} keeps (raise capacity or lower max_msg)",
            config.capacity, config.max_message_len
        )));
    }
    let start = match uri.take_choice("from", &["live", "history"])?.as_deref() {
        Some("history") => ring::Start::History,
        _ => ring::Start::Live,
    };
    Ok((ring::Retention { slow, history }, start))
}

fn ring_error(e: ring::RingError) -> Error {
    match e {
        ring::RingError::Io(io) => Error::Io(io),
        ring::RingError::ForeignOwner { uid, .. } => Error::ForeignOwner { uid },
        other => Error::InvalidArgument(other.to_string()),
    }
}

pub(crate) fn offer_error(e: ring::OfferError) -> Error {
    match e {
        ring::OfferError::BackPressured => Error::BackPressured,
        ring::OfferError::NotConnected => Error::NotConnected,
        ring::OfferError::TooLarge { len, max } => Error::MessageTooLarge { len, max },
        ring::OfferError::Corrupt(m) => Error::Corrupt(m),
    }
}

fn poll_error(e: ring::PollError) -> Error {
    match e {
        ring::PollError::PublisherClosed => Error::Closed,
        ring::PollError::PublisherGone => Error::PeerGone,
        ring::PollError::Corrupt(m) => Error::Corrupt(m),
        ring::PollError::ForeignOwner { uid } => Error::ForeignOwner { uid },
        ring::PollError::Evicted { missed } => Error::Evicted { missed },
    }
}

/// The publication side of an `shm:` channel.
pub(crate) struct ShmPublication {
    pub(crate) ring: ring::Publisher,
    pub(crate) sent: u64,
}

impl ShmPublication {
    pub(crate) fn open(opts: ShmOptions) -> Result<Self, Error> {
        let ring = ring::Publisher::create_with(&opts.name, &opts.config, &opts.retention)
            .map_err(ring_error)?;
        Ok(ShmPublication { ring, sent: 0 })
    }

    #[inline]
    pub(crate) fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        let pos = self.ring.offer(type_id, payload).map_err(offer_error)?;
        self.sent += 1;
        Ok(pos)
    }

    pub(crate) fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            if self.ring.all_consumed() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::TimedOut);
            }
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// The subscription side of an `shm:` channel.
pub(crate) struct ShmSubscription {
    pub(crate) ring: ring::Subscriber,
    pub(crate) wait: ring::WaitStrategy,
    pub(crate) received: u64,
}

impl ShmSubscription {
    pub(crate) fn open(opts: ShmOptions) -> Result<Self, Error> {
        let ring = ring::Subscriber::open_from(
            &opts.name,
            opts.config.dir.as_deref(),
            &opts.owners,
            opts.start,
        )
        .map_err(ring_error)?;
        Ok(ShmSubscription {
            ring,
            wait: opts.wait,
            received: 0,
        })
    }

    #[inline]
    pub(crate) fn poll<F: FnMut(Received<'_>)>(
        &mut self,
        mut handler: F,
        limit: usize,
    ) -> Result<usize, Error> {
        let n = self
            .ring
            .poll(
                |type_id, payload| handler(Received::new(type_id, payload)),
                limit,
            )
            .map_err(poll_error)?;
        self.received += n as u64;
        Ok(n)
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        self.ring
            .wait(self.wait, Some(timeout))
            .map(|_| ())
            .map_err(poll_error)
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    fn parse(uri: &str) -> Result<ShmOptions, Error> {
        let mut u = ChannelUri::parse(uri)?;
        let crate::uri::Scheme::Shm { name } = u.scheme.clone() else {
            panic!("not shm");
        };
        let o = options(name, &mut u)?;
        u.finish()?;
        Ok(o)
    }

    #[test]
    fn slow_history_and_from_parse() {
        let o = parse("shm:a").unwrap();
        assert_eq!(o.retention, ring::Retention::default());
        assert_eq!(o.start, ring::Start::Live);
        let o = parse("shm:a?slow=evict&evict_after=50ms&history=64k&from=history").unwrap();
        assert_eq!(
            o.retention.slow,
            ring::SlowPolicy::Evict {
                after: Duration::from_millis(50)
            }
        );
        assert_eq!(o.retention.history, 64 << 10);
        assert_eq!(o.start, ring::Start::History);
        let o = parse("shm:a?slow=evict").unwrap();
        assert_eq!(
            o.retention.slow,
            ring::SlowPolicy::Evict {
                after: DEFAULT_EVICT_AFTER
            }
        );
        let o = parse("shm:a?slow=block&from=live").unwrap();
        assert_eq!(o.retention.slow, ring::SlowPolicy::Block);
    }

    #[test]
    fn bad_slow_history_and_from_are_named() {
        for (uri, expect) in [
            ("shm:a?slow=drop", "slow=\"drop\""),
            ("shm:a?evict_after=1s", "evict_after= needs slow=evict"),
            (
                "shm:a?slow=evict&evict_after=0ns",
                "evict_after=0ns must be",
            ),
            ("shm:a?slow=evict&evict_after=2h", "not a duration"),
            (
                "shm:a?slow=evict&evict_after=3601s",
                "must be from 1ns to 1h",
            ),
            ("shm:a?slow=evict&evict_after=fast", "evict_after=\"fast\""),
            ("shm:a?history=lots", "history"),
            ("shm:a?capacity=64k&history=64k", "history=65536 exceeds"),
            ("shm:a?from=start", "from=\"start\""),
        ] {
            let e = parse(uri).err().unwrap_or_else(|| panic!("{uri} parsed"));
            assert!(matches!(e, Error::InvalidUri { .. }), "{uri}: {e:?}");
            assert!(e.to_string().contains(expect), "{uri}: {e}");
        }
    }
}
