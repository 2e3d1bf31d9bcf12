//! conduit through its public API (`Publication` / `Subscription`), for any
//! URI: the `shm` and `udp*` channels differ only in the URIs they pass here.
//! Latency uses two channels (ping→pong, pong→ping) between two processes;
//! messages are sent with `offer` (pong echoes the received bytes straight
//! from ring memory) and read in place in `poll`; both sides busy-spin, or
//! for the `*-block` UDP channels wait in the kernel (`poll_timeout` on a
//! `wait=block` subscription, [`BLOCK_SLICE`] at a time). The
//! throughput sender writes in place with `offer_with` over `shm:` and uses
//! `offer` over UDP (see `SendPath`). The peer process gets both URIs as its
//! parameter, `A2B|B2A`.

use std::time::{Duration, Instant};

use conduit::{Error, Publication, Received, Subscription};

use super::{ping_with_peer, rx_with_peer, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, LatencyConfig, PingEnd, PongEnd, BLOCK_SLICE, PONG_IDLE_TIMEOUT};
use crate::report::{LatencyResult, ThroughputResult};
use crate::throughput::{run_tx, RxEnd, TxEnd};

/// Type id of the benchmark's messages.
const TYPE_ID: u32 = 0x4245_4e43;

/// How long a side waits for the other to attach, or for a full ring to drain.
const STALL_TIMEOUT: Duration = Duration::from_secs(20);

fn err(what: &str, e: Error) -> BenchError {
    BenchError(format!("{what}: {e}"))
}

/// Checks a received message carries the benchmark's type id.
fn check_type(r: &Received<'_>) -> Result<()> {
    check_type_id(r.type_id())
}

/// Checks a received type id is the benchmark's.
fn check_type_id(type_id: u32) -> Result<()> {
    if type_id == TYPE_ID {
        Ok(())
    } else {
        Err(BenchError(format!(
            "received type id {type_id:#x} where {TYPE_ID:#x} was sent"
        )))
    }
}

/// What the latency loop keeps of a received message, as plain values (the
/// poll handler stays small; errors are built after `poll` returns).
#[derive(Clone, Copy)]
struct Seen {
    type_id: u32,
    len: usize,
    /// The first 8 payload bytes as a little-endian number (0 if shorter).
    seq: u64,
}

impl Seen {
    fn of(r: &Received<'_>) -> Seen {
        let payload = r.payload();
        let seq = payload
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_le_bytes(*b));
        Seen {
            type_id: r.type_id(),
            len: payload.len(),
            seq,
        }
    }

    /// True if the message has the benchmark's type id and `size` bytes.
    fn is_valid(&self, size: usize) -> bool {
        self.type_id == TYPE_ID && self.len == size && size >= 8
    }
}

/// Checks what was seen (type id, then length, as `crate::latency::seq_of`
/// does); returns its sequence number.
fn check_seen(seen: Option<Seen>, size: usize) -> Result<Option<u64>> {
    let Some(s) = seen else {
        return Ok(None);
    };
    check_type_id(s.type_id)?;
    if s.len != size || size < 8 {
        return Err(BenchError(format!(
            "received {} bytes where {size} were sent",
            s.len
        )));
    }
    Ok(Some(s.seq))
}

/// Writes `msg` in place in ring memory (`offer_with`: claim, fill, commit in
/// one call); `Ok(false)` when the ring is full or no subscriber is attached
/// yet.
fn try_offer(p: &mut Publication, msg: &[u8]) -> Result<bool> {
    match p.offer_with(TYPE_ID, msg.len(), |buf| buf.copy_from_slice(msg)) {
        Ok(_) => Ok(true),
        Err(Error::BackPressured | Error::NotConnected) => Ok(false),
        Err(e) => Err(err("offer", e)),
    }
}

/// Polls `s` for at most one message: at once, or (`block`) waiting up to
/// [`BLOCK_SLICE`] for it with the subscription's wait strategy.
#[inline(always)]
fn poll_one<F: FnMut(Received<'_>)>(
    s: &mut Subscription,
    block: bool,
    handler: F,
) -> Result<usize> {
    if block {
        s.poll_timeout(handler, 1, BLOCK_SLICE)
    } else {
        s.poll(handler, 1)
    }
    .map_err(|e| err("poll", e))
}

/// Offers a copy of `msg`, spinning while the ring is full or unattached.
fn offer_spin(p: &mut Publication, msg: &[u8]) -> Result<()> {
    let mut spins: u32 = 0;
    let mut since: Option<Instant> = None;
    loop {
        match p.offer(TYPE_ID, msg) {
            Ok(_) => break,
            Err(Error::BackPressured | Error::NotConnected) => {}
            Err(e) => return Err(err("offer", e)),
        }
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 && since.get_or_insert_with(Instant::now).elapsed() > STALL_TIMEOUT {
            return Err(BenchError(format!(
                "offer: no room or no subscriber for {STALL_TIMEOUT:?}"
            )));
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// The ping end: publishes on A2B, subscribes to B2A.
pub(crate) struct Ping {
    publication: Publication,
    subscription: Subscription,
    size: usize,
    /// Wait for the echo in the kernel instead of spinning.
    block: bool,
}

impl PingEnd for Ping {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        offer_spin(&mut self.publication, msg)
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        let size = self.size;
        let mut seen: Option<Seen> = None;
        poll_one(&mut self.subscription, self.block, |r| {
            seen = Some(Seen::of(&r))
        })?;
        check_seen(seen, size)
    }

    fn driver(&self) -> Option<&'static str> {
        self.subscription.counters().driver
    }
}

/// The pong end: subscribes to A2B, publishes on B2A.
pub(crate) struct Pong {
    publication: Publication,
    subscription: Subscription,
    size: usize,
    /// Wait for the next message in the kernel instead of spinning.
    block: bool,
}

impl PongEnd for Pong {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        let size = self.size;
        let publication = &mut self.publication;
        let mut seen: Option<Seen> = None;
        let mut failed: Option<BenchError> = None;
        poll_one(&mut self.subscription, self.block, |r| {
            let s = Seen::of(&r);
            // Echo only a message that passes the checks.
            if s.is_valid(size) {
                if let Err(e) = offer_spin(publication, r.payload()) {
                    failed = Some(e);
                }
            }
            seen = Some(s);
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        check_seen(seen, size)
    }
}

impl Pong {
    /// Echoes round trip 0 while keeping `other`'s subscription polled: ping
    /// attaches both channels of an interleaved pair before its first
    /// message, and a UDP subscription answers its publication's handshake
    /// only when polled.
    ///
    /// # Errors
    /// A message arrived on `other` first, round trip 0 did not come within
    /// [`PONG_IDLE_TIMEOUT`], or a channel failed.
    pub(crate) fn echo_first_polling(&mut self, other: &mut Pong) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(seq) = self.try_echo()? {
                return match seq {
                    0 => Ok(()),
                    _ => Err(BenchError(format!(
                        "first message has sequence number {seq}, not 0"
                    ))),
                };
            }
            let mut early = false;
            poll_one(&mut other.subscription, other.block, |_| early = true)?;
            if early {
                return Err(BenchError::msg(
                    "a message came on the second channel of a pair before the first",
                ));
            }
            if start.elapsed() > PONG_IDLE_TIMEOUT {
                return Err(BenchError(format!(
                    "no first message within {PONG_IDLE_TIMEOUT:?}"
                )));
            }
            std::hint::spin_loop();
        }
    }
}

/// Runs a latency test over conduit: ping publishes on `a2b` and subscribes
/// to `b2a`; the pong process does the opposite.
///
/// # Errors
/// A channel cannot be opened, the other side never attaches, or the run failed.
pub fn latency(
    channel: Channel,
    cfg: &LatencyConfig,
    a2b: &str,
    b2a: &str,
) -> Result<LatencyResult> {
    let ping = open_ping(a2b, b2a, cfg.size, channel.blocks())?;
    let param = format!("{a2b}|{b2a}");
    ping_with_peer(channel.name(), cfg, &param, move |_| attach(ping))
}

/// Opens ping's publication (`a2b`) and subscription (`b2a`); `block`: wait
/// for echoes with `poll_timeout` (the URI should say `wait=block`).
///
/// # Errors
/// A channel cannot be opened.
pub(crate) fn open_ping(a2b: &str, b2a: &str, size: usize, block: bool) -> Result<Ping> {
    let publication =
        Publication::open(a2b).map_err(|e| err(&format!("open publication {a2b}"), e))?;
    let subscription =
        Subscription::open(b2a).map_err(|e| err(&format!("open subscription {b2a}"), e))?;
    Ok(Ping {
        publication,
        subscription,
        size,
        block,
    })
}

/// Waits until pong's subscription is attached to ping's publication;
/// meanwhile ping's polls attach its subscription to pong's publication.
///
/// # Errors
/// Pong did not attach within [`STALL_TIMEOUT`], or sent a message first.
pub(crate) fn attach(mut ping: Ping) -> Result<Ping> {
    let start = Instant::now();
    while !ping.publication.is_connected() {
        if ping.try_recv()?.is_some() {
            return Err(BenchError::msg("pong sent a message before any ping"));
        }
        if start.elapsed() > STALL_TIMEOUT {
            return Err(BenchError(format!(
                "pong did not attach within {STALL_TIMEOUT:?}"
            )));
        }
        std::hint::spin_loop();
    }
    Ok(ping)
}

/// The pong side: `param` is `A2B|B2A`.
///
/// # Errors
/// Bad parameter, a channel cannot be opened, or the run failed.
pub fn pong(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let mut pong = open_pong(&args.param, args.size, args.channel.blocks())?;
    ready("");
    run_pong(&mut pong, args.count)
}

/// The pong side of an interleaved pair of two conduit channels (`param`
/// is `A2B|B2A|A2B|B2A`, the pair's first channel first): opens both,
/// says `READY`, and echoes `args.count` round trips on the schedule of
/// [`crate::latency::run_ping_pair`].
///
/// # Errors
/// Bad parameter, a channel cannot be opened, or the run failed.
pub(crate) fn pong_two(args: &PeerArgs, block: bool, ready: impl FnOnce(&str)) -> Result<()> {
    let parts: Vec<&str> = args.param.split('|').collect();
    let [a_a2b, a_b2a, b_a2b, b_b2a] = parts[..] else {
        return Err(BenchError(format!("bad parameter `{}`", args.param)));
    };
    let mut first = open_pong(&format!("{a_a2b}|{a_b2a}"), args.size, block)?;
    let mut second = open_pong(&format!("{b_a2b}|{b_b2a}"), args.size, block)?;
    ready("");
    if args.count == 0 {
        return Ok(());
    }
    first.echo_first_polling(&mut second)?;
    crate::latency::run_pong_pair_from(&mut first, &mut second, 1, args.count)
}

/// Opens pong's subscription and publication from `A2B|B2A`; `block` as for
/// [`open_ping`].
///
/// # Errors
/// Bad parameter, or a channel cannot be opened.
pub(crate) fn open_pong(param: &str, size: usize, block: bool) -> Result<Pong> {
    let (a2b, b2a) = param
        .split_once('|')
        .ok_or_else(|| BenchError(format!("bad channel pair `{param}`")))?;
    let subscription =
        Subscription::open(a2b).map_err(|e| err(&format!("open subscription {a2b}"), e))?;
    let publication =
        Publication::open(b2a).map_err(|e| err(&format!("open publication {b2a}"), e))?;
    Ok(Pong {
        publication,
        subscription,
        size,
        block,
    })
}

/// How the throughput sender hands a message to the publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendPath {
    /// `offer`: copies the bytes.
    Offer,
    /// `offer_with`: claim, fill in place, commit in one call.
    OfferWith,
    /// `try_claim`, `as_mut_slice`, `commit`: the claim API by hand.
    Claim,
}

impl SendPath {
    /// `shm:` writes in place with `offer_with`; UDP uses `offer`, its
    /// natural path. `CONDUIT_BENCH_SEND=offer|offer_with|claim` chooses
    /// another, to compare the paths of one channel (`docs/benchmarks.md`).
    fn for_channel(publication: &Publication) -> Result<SendPath> {
        match std::env::var("CONDUIT_BENCH_SEND").as_deref() {
            Err(_) | Ok("") if publication.counters().driver.is_none() => Ok(SendPath::OfferWith),
            Err(_) | Ok("") => Ok(SendPath::Offer),
            Ok("offer") => Ok(SendPath::Offer),
            Ok("offer_with") => Ok(SendPath::OfferWith),
            Ok("claim") => Ok(SendPath::Claim),
            Ok(other) => Err(BenchError(format!(
                "CONDUIT_BENCH_SEND={other}: expected offer, offer_with or claim"
            ))),
        }
    }
}

/// The sending end (see [`SendPath`]).
struct Tx {
    publication: Publication,
    path: SendPath,
}

impl TxEnd for Tx {
    fn try_send(&mut self, msg: &[u8]) -> Result<bool> {
        let r = match self.path {
            SendPath::OfferWith => return try_offer(&mut self.publication, msg),
            SendPath::Offer => self.publication.offer(TYPE_ID, msg).map(|_| ()),
            // A plain match, as a user writes it: inside `Result::map`'s
            // closure the compiler kept the inlined commit out of line.
            SendPath::Claim => match self.publication.try_claim(TYPE_ID, msg.len()) {
                Ok(mut c) => {
                    c.as_mut_slice().copy_from_slice(msg);
                    c.commit();
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(()) => Ok(true),
            Err(Error::BackPressured | Error::NotConnected) => Ok(false),
            Err(e) => Err(err("offer", e)),
        }
    }
}

struct Rx(Subscription);

impl RxEnd for Rx {
    fn poll<F: FnMut(&[u8]) -> Result<()>>(&mut self, mut on_msg: F) -> Result<usize> {
        let mut failed: Option<BenchError> = None;
        let n = self
            .0
            .poll(
                |r| {
                    if failed.is_none() {
                        if let Err(e) = check_type(&r).and_then(|()| on_msg(r.payload())) {
                            failed = Some(e);
                        }
                    }
                },
                256,
            )
            .map_err(|e| err("poll", e))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    fn datagrams(&self) -> Option<(u64, u64)> {
        let c = self.0.counters();
        (c.datagrams_received > 0).then_some((c.datagrams_received, c.received))
    }

    fn driver(&self) -> Option<&'static str> {
        self.0.counters().driver
    }
}

/// Runs a one-way throughput test over conduit: this process subscribes to
/// `uri`, a sender process publishes on it.
///
/// # Errors
/// The channel cannot be opened, or the run failed.
pub fn throughput(
    channel: Channel,
    size: usize,
    messages: u64,
    uri: &str,
) -> Result<ThroughputResult> {
    let subscription =
        Subscription::open(uri).map_err(|e| err(&format!("open subscription {uri}"), e))?;
    rx_with_peer(channel.name(), size, messages, uri, move |_| {
        Ok(Rx(subscription))
    })
}

/// The sender side of a throughput test: `param` is the channel URI. Waits
/// until everything sent was consumed before returning.
///
/// # Errors
/// The channel cannot be opened, or the run failed.
pub fn send(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let publication = Publication::open(&args.param)
        .map_err(|e| err(&format!("open publication {}", args.param), e))?;
    let mut tx = Tx {
        path: SendPath::for_channel(&publication)?,
        publication,
    };
    ready("");
    run_tx(&mut tx, args.size, args.count)?;
    tx.publication
        .flush(STALL_TIMEOUT)
        .map_err(|e| err("flush", e))
}
