//! `shm:NAME` channels: the shared-memory ring of `conduit-ringbuf` behind the
//! common channel API. The URI options and the ownership rules are
//! documented publicly in [`crate::uri`].

use crate::stats::{self, StatsSlot};
use crate::uri::ChannelUri;
use crate::{Error, Received};
use conduit_ringbuf as ring;
use crossbeam_utils::Backoff;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) struct ShmOptions {
    /// The URI as given, for errors.
    pub(crate) uri: String,
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

/// Parses the `shm:` options of `uri`. Only parses: the ring checks the
/// limits (capacity, `max_msg`, subscribers, mode) when it is created, and
/// [`ShmPublication::open`] reports a value out of range as
/// [`Error::InvalidUri`] naming the option.
pub(crate) fn options(name: String, uri: &mut ChannelUri) -> Result<ShmOptions, Error> {
    let mut config = ring::RingConfig::default();
    if let Some(cap) = uri.take_size("capacity")? {
        config.capacity = cap;
        config.max_message_len = cap / 8;
    }
    let mut explicit_max = false;
    if let Some(max) = uri.take_size("max_msg")? {
        explicit_max = true;
        config.max_message_len = max;
    }
    if let Some(n) = uri.take_u64("subscribers")? {
        config.max_subscribers = u32::try_from(n)
            .map_err(|_| uri.invalid(format!("subscribers={n} is not a 32-bit count")))?;
    }
    if let Some(n) = uri.take_u64("publishers")? {
        // The range is the ring's to check; only the default `max_msg`
        // follows the multi-writer limit here.
        config.max_publishers = u32::try_from(n)
            .map_err(|_| uri.invalid(format!("publishers={n} is not a 32-bit count")))?;
        let multi_max = ring::layout::MAX_MULTI_MESSAGE_LEN as usize;
        if n > 1 && !explicit_max && config.max_message_len > multi_max {
            config.max_message_len = multi_max;
        }
    }
    if let Some(mode) = uri.take_str("mode") {
        config.mode = u32::from_str_radix(&mode, 8).map_err(|_| {
            uri.invalid(format!(
                "mode={mode:?} is not octal file permissions (e.g. 600, 660)"
            ))
        })?;
    }
    if let Some(dir) = uri.take_str("dir") {
        config.dir = Some(PathBuf::from(dir));
    }
    let owners = match uri.take_str("owners") {
        Some(v) => parse_owners(uri, &v)?,
        None => Vec::new(),
    };
    let (retention, start) = retention(uri)?;
    let wait = match uri
        .take_choice("wait", &["spin", "yield", "block"])?
        .as_deref()
    {
        None | Some("spin") => ring::WaitStrategy::Spin,
        Some("yield") => ring::WaitStrategy::SpinYield,
        _ => ring::WaitStrategy::Block,
    };
    Ok(ShmOptions {
        uri: uri.as_str().to_owned(),
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
fn retention(uri: &mut ChannelUri) -> Result<(ring::Retention, ring::Start), Error> {
    let evict = uri.take_choice("slow", &["block", "evict"])?.as_deref() == Some("evict");
    let after = uri.take_duration("evict_after")?;
    let slow = match (evict, after) {
        (false, None) => ring::SlowPolicy::Block,
        (false, Some(_)) => {
            return Err(uri.invalid("evict_after= needs slow=evict"));
        }
        (true, after) => {
            // The range (1 ns to 1 h) is the ring's to check, at creation.
            ring::SlowPolicy::Evict {
                after: after.unwrap_or(DEFAULT_EVICT_AFTER),
            }
        }
    };
    // How much history a ring can keep is the ring's to check, at creation.
    let history = uri.take_size("history")?.unwrap_or(0) as u64;
    let start = match uri.take_choice("from", &["live", "history"])?.as_deref() {
        Some("history") => ring::Start::History,
        _ => ring::Start::Live,
    };
    Ok((ring::Retention { slow, history }, start))
}

/// A ring error at open: a configuration or name the ring refuses is the
/// URI's fault, named by its URI option; the rest as [`From`] maps them.
fn open_error(uri: &str, e: ring::RingError) -> Error {
    match e {
        ring::RingError::InvalidConfig { field, reason } => {
            let option = match field {
                "max_message_len" => "max_msg",
                "max_subscribers" => "subscribers",
                "max_publishers" => "publishers",
                other => other,
            };
            Error::invalid_uri(uri, format!("{option}: {reason}"))
        }
        ring::RingError::InvalidName(reason) => {
            Error::invalid_uri(uri, format!("shared-memory name {reason}"))
        }
        other => other.into(),
    }
}

/// Counts a refused offer in the handle's slot (a cold path).
#[cold]
#[inline(never)]
fn count_refusal(w: stats::Writer, e: ring::OfferError) -> Error {
    match e {
        ring::OfferError::BackPressured => w.bump(stats::BACK_PRESSURE),
        ring::OfferError::NotConnected => w.bump(stats::NOT_CONNECTED),
        _ => {}
    }
    offer_error(e)
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
    /// Payload bytes sent.
    pub(crate) bytes: u64,
    /// This handle's slot in the counters file (see `stats.rs`).
    pub(crate) stats: StatsSlot,
}

impl ShmPublication {
    pub(crate) fn open(opts: ShmOptions) -> Result<Self, Error> {
        let ring = ring::Publisher::create_with(&opts.name, &opts.config, &opts.retention)
            .map_err(|e| open_error(&opts.uri, e))?;
        let stats = StatsSlot::open(conduit_counters::KIND_SHM_PUBLICATION, &opts.uri, "ring");
        let mut p = ShmPublication {
            ring,
            sent: 0,
            bytes: 0,
            stats,
        };
        p.publish_cold();
        Ok(p)
    }

    /// The data path's counters: two relaxed stores on the slot's line.
    #[inline(always)]
    fn sent(&mut self, len: usize) {
        self.sent += 1;
        self.bytes += len as u64;
        self.stats.writer().traffic(self.sent, self.bytes);
    }

    /// An offer refused: counted, with the position (a cold path).
    #[cold]
    #[inline(never)]
    fn refused(&mut self, e: ring::OfferError) -> Error {
        let w = self.stats.writer();
        w.set(stats::POSITION, self.ring.position());
        w.set(stats::EVICTIONS, self.ring.evictions());
        count_refusal(w, e)
    }

    /// Positions, subscribers and evictions into the slot (cold paths).
    fn publish_cold(&mut self) {
        let w = self.stats.writer();
        w.set(stats::POSITION, self.ring.position());
        w.set(stats::EVICTIONS, self.ring.evictions());
        w.set(stats::SUBSCRIBER_SLOTS, self.ring.subscriber_count() as u64);
        w.traffic(self.sent, self.bytes);
        w.heartbeat();
    }

    #[inline]
    pub(crate) fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        let pos = match self.ring.offer(type_id, payload) {
            Ok(pos) => pos,
            Err(e) => return Err(self.refused(e)),
        };
        self.sent(payload.len());
        Ok(pos)
    }

    pub(crate) fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let backoff = Backoff::new();
        self.publish_cold();
        loop {
            if self.ring.all_consumed() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::TimedOut);
            }
            if backoff.is_completed() {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                backoff.snooze();
            }
        }
    }

    /// Writes a message of `len` bytes in place with `fill` and publishes it.
    #[inline(always)]
    pub(crate) fn offer_with<F: FnOnce(&mut [u8])>(
        &mut self,
        type_id: u32,
        len: usize,
        fill: F,
    ) -> Result<u64, Error> {
        let pos = match self.ring.offer_with(type_id, len, fill) {
            Ok(pos) => pos,
            Err(e) => return Err(self.refused(e)),
        };
        self.sent(len);
        Ok(pos)
    }

    /// Reserves `len` bytes in ring memory for a message.
    #[inline(always)]
    pub(crate) fn try_claim(&mut self, type_id: u32, len: usize) -> Result<ring::Claim<'_>, Error> {
        // Counted when handed out, like `sent`.
        let w = self.stats.writer();
        match self.ring.try_claim(type_id, len) {
            Ok(c) => {
                self.sent += 1;
                self.bytes += len as u64;
                w.traffic(self.sent, self.bytes);
                Ok(c)
            }
            Err(e) => Err(count_refusal(w, e)),
        }
    }

    /// True while at least one subscriber is attached.
    pub(crate) fn is_connected(&mut self) -> bool {
        let connected = self.ring.is_connected();
        self.publish_cold();
        connected
    }

    /// Largest payload the ring accepts.
    pub(crate) fn max_message_len(&self) -> usize {
        self.ring.max_message_len()
    }

    /// This handle's counters.
    pub(crate) fn counters(&self) -> crate::Counters {
        crate::Counters {
            sent: self.sent,
            ..crate::Counters::default()
        }
    }
}

/// The subscription side of an `shm:` channel.
pub(crate) struct ShmSubscription {
    pub(crate) ring: ring::Subscriber,
    pub(crate) wait: ring::WaitStrategy,
    pub(crate) received: u64,
    /// Payload bytes received.
    pub(crate) bytes: u64,
    /// This handle's slot in the counters file (see `stats.rs`).
    pub(crate) stats: StatsSlot,
}

impl ShmSubscription {
    pub(crate) fn open(opts: ShmOptions) -> Result<Self, Error> {
        let ring = ring::Subscriber::open_from(
            &opts.name,
            opts.config.dir.as_deref(),
            &opts.owners,
            opts.start,
        )
        .map_err(|e| open_error(&opts.uri, e))?;
        let stats = StatsSlot::open(conduit_counters::KIND_SHM_SUBSCRIPTION, &opts.uri, "ring");
        let s = ShmSubscription {
            ring,
            wait: opts.wait,
            received: 0,
            bytes: 0,
            stats,
        };
        s.publish_cold();
        Ok(s)
    }

    /// Position and totals into the slot (cold paths).
    fn publish_cold(&self) {
        let w = self.stats.writer();
        w.set(stats::POSITION, self.ring.position());
        w.traffic(self.received, self.bytes);
        w.heartbeat();
    }

    #[inline]
    pub(crate) fn poll<F: FnMut(Received<'_>)>(
        &mut self,
        mut handler: F,
        limit: usize,
    ) -> Result<usize, Error> {
        let mut bytes = 0u64;
        let r = self.ring.poll_records(
            |r, payload| {
                bytes += payload.len() as u64;
                handler(Received::new(r.type_id(), payload).with_record(r))
            },
            limit,
        );
        let n = match r {
            Ok(n) => n,
            Err(e) => return Err(self.poll_failed(e)),
        };
        if n > 0 {
            // The data path's counters: two relaxed stores on the slot's line.
            self.received += n as u64;
            self.bytes += bytes;
            self.stats.writer().traffic(self.received, self.bytes);
        }
        Ok(n)
    }

    /// A poll that failed (publisher gone or closed, eviction): the
    /// position into the slot (a cold path).
    #[cold]
    #[inline(never)]
    fn poll_failed(&mut self, e: ring::PollError) -> Error {
        self.publish_cold();
        poll_error(e)
    }

    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        self.publish_cold();
        self.ring
            .wait(self.wait, Some(timeout))
            .map(|_| ())
            .map_err(poll_error)
    }

    /// Does the work of an empty poll when that is all a poll would do now (see
    /// `Subscription::poll_idle`).
    #[inline]
    pub(crate) fn poll_idle(&mut self) -> bool {
        self.ring.poll_idle()
    }

    /// True while attached to a live publisher.
    pub(crate) fn is_connected(&mut self) -> bool {
        let connected = self.ring.is_connected();
        self.publish_cold();
        connected
    }

    /// This handle's counters.
    pub(crate) fn counters(&self) -> crate::Counters {
        crate::Counters {
            received: self.received,
            ..crate::Counters::default()
        }
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
            ("shm:a?slow=evict&evict_after=2h", "not a duration"),
            ("shm:a?slow=evict&evict_after=fast", "evict_after=\"fast\""),
            ("shm:a?history=lots", "history"),
            ("shm:a?from=start", "from=\"start\""),
        ] {
            let e = parse(uri).err().unwrap_or_else(|| panic!("{uri} parsed"));
            assert!(matches!(e, Error::InvalidUri { .. }), "{uri}: {e:?}");
            assert!(e.to_string().contains(expect), "{uri}: {e}");
        }
        // Ranges are the ring's to check, when the publication creates it;
        // the error still names the option.
        for (q, expect) in [
            ("slow=evict&evict_after=0ns", "evict_after"),
            ("slow=evict&evict_after=3601s", "evict_after"),
            ("capacity=64k&history=64k", "history"),
        ] {
            let uri = format!("shm:retention-{}?{q}", std::process::id());
            let e = crate::Publication::open(&uri).expect_err(q);
            assert!(matches!(e, Error::InvalidUri { .. }), "{uri}: {e:?}");
            assert!(e.to_string().contains(expect), "{uri}: {e}");
        }
    }
}
