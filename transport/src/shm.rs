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
//! | `publishers` | publishers attached at once, 1 to 64 (publication; see below) | 1 |
//! | `mode` | octal file mode of the ring file (publication) | `600` |
//! | `dir` | directory of ring files | `$CONDUIT_SHM_DIR` or `/dev/shm` |
//! | `wait` | `spin`, `yield` or `block`: how [`crate::Subscription::poll_timeout`] waits | `spin` |
//! | `owners` | comma-separated uids, besides the process's own, whose rings a subscription attaches to (subscription; at most 64) | none |
//!
//! A subscription accepts the publication's parameters too (so one URI can
//! serve both sides) and ignores them: the publisher's ring header is the
//! truth. A publication accepts `owners` and ignores it.
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
//! path is unchanged.
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
use crate::{Error, Received, Source};
use conduit_ringbuf as ring;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) struct ShmOptions {
    pub(crate) name: String,
    pub(crate) config: ring::RingConfig,
    pub(crate) wait: ring::WaitStrategy,
    /// Uids besides our own whose rings a subscription attaches to.
    pub(crate) owners: Vec<u32>,
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
    let mut explicit_max = false;
    if let Some(max) = uri.take_size("max_msg")? {
        explicit_max = true;
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
    if let Some(n) = uri.take_u64("publishers")? {
        if !(1..=u64::from(ring::layout::MAX_PUBLISHERS)).contains(&n) {
            return Err(uri.invalid(format!(
                "publishers={n} must be 1 to {}",
                ring::layout::MAX_PUBLISHERS
            )));
        }
        config.max_publishers = n as u32;
        let multi_max = ring::layout::MAX_MULTI_MESSAGE_LEN as usize;
        if n > 1 && config.max_message_len > multi_max {
            if explicit_max {
                return Err(uri.invalid(format!(
                    "max_msg={} exceeds {multi_max}, the limit with several publishers",
                    config.max_message_len
                )));
            }
            config.max_message_len = multi_max;
        }
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
    })
}

fn ring_error(e: ring::RingError) -> Error {
    match e {
        ring::RingError::Io(io) => Error::Io(io),
        ring::RingError::ForeignOwner { uid, .. } => Error::ForeignOwner { uid },
        ring::RingError::TooManyPublishers { max, .. } => Error::TooManyPublishers { max },
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
    }
}

/// The publication side of an `shm:` channel.
pub(crate) struct ShmPublication {
    pub(crate) ring: ring::Publisher,
    pub(crate) sent: u64,
}

impl ShmPublication {
    pub(crate) fn open(opts: ShmOptions) -> Result<Self, Error> {
        let ring = ring::Publisher::create(&opts.name, &opts.config).map_err(ring_error)?;
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
        let ring = ring::Subscriber::open_with_owners(
            &opts.name,
            opts.config.dir.as_deref(),
            &opts.owners,
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
            .poll_records(
                |r, payload| {
                    let source = r.publisher().map(|(index, pid)| Source::Shm { index, pid });
                    handler(Received::new(r.type_id(), payload).with_origin(r.position(), source))
                },
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
