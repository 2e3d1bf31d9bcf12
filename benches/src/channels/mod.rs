//! The channels the benchmark knows, and the plumbing that runs a channel's
//! two sides in two processes (or two threads).

#[cfg(feature = "conduit")]
pub mod conduit_api;
pub mod crossbeam;
pub mod iceoryx2;
pub mod limit;
#[cfg(feature = "conduit")]
pub mod proto;
#[cfg(feature = "conduit")]
pub mod shm;
#[cfg(feature = "conduit")]
pub mod udp;
pub mod udp_raw;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};
use crate::hist::{Percentiles, RawHistogram};
use crate::latency::{run_ping, run_ping_pair, LatencyConfig, PingEnd, Stop};
use crate::pin;
use crate::report::{LatencyResult, ThroughputResult};
use crate::rss::{peak_rss_kib, reset_peak};
use crate::spawn::{announce, child_init, Peer, READY_TIMEOUT};
use crate::throughput::{run_rx, RxEnd};

/// A channel under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// One cache line bounced between two processes: the physical limit.
    Limit,
    /// Two cache lines, one per direction, between two processes: the floor
    /// for any design with a separate channel per direction.
    Limit2Line,
    /// A fresh cache line per message in each direction, as a 1 MiB ring
    /// moves through memory: the hardware cost of a ring, with no software.
    LimitRing,
    /// conduit over shared memory.
    Shm,
    /// conduit over shared memory on a ring opened for four publishers
    /// (`publishers=4`, the multi-writer path) with one active.
    ShmMpsc,
    /// crossbeam-channel between two threads.
    Crossbeam,
    /// iceoryx2 publish-subscribe between two processes.
    Iceoryx2,
    /// Plain non-blocking UDP sockets on loopback: the kernel limit for UDP.
    UdpRaw,
    /// conduit over UDP with its default driver.
    Udp,
    /// conduit over UDP, io_uring driver.
    UdpUring,
    /// conduit over UDP, plain-socket driver.
    UdpSocket,
    /// conduit over UDP with its default driver and a pre-shared key
    /// (`key=PATH`): every datagram encrypted and authenticated.
    UdpAead,
    /// Plain UDP sockets on loopback, each side blocked in `recv` until a
    /// datagram arrives: the kernel limit for a receiver that sleeps.
    UdpRawBlock,
    /// conduit over UDP with its default driver, each subscription blocked
    /// in the kernel (`wait=block`, `poll_timeout`).
    UdpBlock,
    /// As [`Channel::UdpBlock`], io_uring driver.
    UdpUringBlock,
    /// As [`Channel::UdpBlock`], plain-socket driver.
    UdpSocketBlock,
    /// conduit's protocol core alone, sender to receiver in memory, no loss.
    Proto,
    /// conduit's protocol core alone with 1 % random loss.
    ProtoLoss,
}

impl Channel {
    /// Every channel, in the order `compare` runs them.
    pub const ALL: [Channel; 18] = [
        Channel::Limit,
        Channel::Limit2Line,
        Channel::LimitRing,
        Channel::Shm,
        Channel::ShmMpsc,
        Channel::Crossbeam,
        Channel::Iceoryx2,
        Channel::UdpRaw,
        Channel::Udp,
        Channel::UdpUring,
        Channel::UdpSocket,
        Channel::UdpAead,
        Channel::UdpRawBlock,
        Channel::UdpBlock,
        Channel::UdpUringBlock,
        Channel::UdpSocketBlock,
        Channel::Proto,
        Channel::ProtoLoss,
    ];

    /// The channel's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Limit => "limit",
            Channel::Limit2Line => "limit-2line",
            Channel::LimitRing => "limit-ring",
            Channel::Shm => "shm",
            Channel::ShmMpsc => "shm-mpsc",
            Channel::Crossbeam => "crossbeam",
            Channel::Iceoryx2 => "iceoryx2",
            Channel::UdpRaw => "udp-raw",
            Channel::Udp => "udp",
            Channel::UdpUring => "udp-uring",
            Channel::UdpSocket => "udp-socket",
            Channel::UdpAead => "udp-aead",
            Channel::UdpRawBlock => "udp-raw-block",
            Channel::UdpBlock => "udp-block",
            Channel::UdpUringBlock => "udp-uring-block",
            Channel::UdpSocketBlock => "udp-socket-block",
            Channel::Proto => "proto",
            Channel::ProtoLoss => "proto-loss",
        }
    }

    /// Parses a command-line name.
    ///
    /// # Errors
    /// Unknown name; the message lists the known ones.
    pub fn parse(s: &str) -> Result<Channel> {
        Channel::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Channel::ALL.iter().map(|c| c.name()).collect();
                BenchError(format!(
                    "unknown channel `{s}` (known: {})",
                    names.join(", ")
                ))
            })
    }

    /// conduit over UDP (any driver, either wait mode).
    pub fn is_conduit_udp(self) -> bool {
        matches!(
            self,
            Channel::Udp
                | Channel::UdpUring
                | Channel::UdpSocket
                | Channel::UdpAead
                | Channel::UdpBlock
                | Channel::UdpUringBlock
                | Channel::UdpSocketBlock
        )
    }

    /// Any UDP channel, conduit or the bare socket.
    pub fn is_udp(self) -> bool {
        self.is_conduit_udp() || matches!(self, Channel::UdpRaw | Channel::UdpRawBlock)
    }

    /// Whether the receivers block in the kernel instead of spinning.
    pub fn blocks(self) -> bool {
        matches!(
            self,
            Channel::UdpRawBlock
                | Channel::UdpBlock
                | Channel::UdpUringBlock
                | Channel::UdpSocketBlock
        )
    }

    /// The bare-socket channel in the same wait mode: what a UDP channel is
    /// measured against.
    pub fn raw_baseline(self) -> Channel {
        if self.blocks() {
            Channel::UdpRawBlock
        } else {
            Channel::UdpRaw
        }
    }

    /// Whether the channel has a round-trip (latency) test.
    pub fn has_latency(self) -> bool {
        !matches!(self, Channel::Proto | Channel::ProtoLoss)
    }

    /// Runs the latency test.
    ///
    /// # Errors
    /// The channel has no latency test, is not available, or the run failed.
    pub fn latency(self, cfg: &LatencyConfig) -> Result<LatencyResult> {
        if cfg.size < 8 {
            return Err(BenchError(format!(
                "--size {} is too small: a message carries an 8-byte sequence number",
                cfg.size
            )));
        }
        let r = match self {
            Channel::Limit => limit::latency(cfg, limit::Lines::One),
            Channel::Limit2Line => limit::latency(cfg, limit::Lines::Two),
            Channel::LimitRing => limit::latency(cfg, limit::Lines::Ring),
            #[cfg(feature = "conduit")]
            Channel::Shm | Channel::ShmMpsc => shm::latency(self, cfg),
            Channel::Crossbeam => crossbeam::latency(cfg),
            Channel::Iceoryx2 => iceoryx2::latency(cfg),
            Channel::UdpRaw | Channel::UdpRawBlock => udp_raw::latency(self, cfg),
            #[cfg(feature = "conduit")]
            Channel::Udp
            | Channel::UdpUring
            | Channel::UdpSocket
            | Channel::UdpAead
            | Channel::UdpBlock
            | Channel::UdpUringBlock
            | Channel::UdpSocketBlock => udp::latency(self, cfg),
            #[cfg(not(feature = "conduit"))]
            Channel::Shm
            | Channel::ShmMpsc
            | Channel::Udp
            | Channel::UdpUring
            | Channel::UdpSocket
            | Channel::UdpAead
            | Channel::UdpBlock
            | Channel::UdpUringBlock
            | Channel::UdpSocketBlock => Err(without_conduit()),
            Channel::Proto | Channel::ProtoLoss => Err(BenchError(format!(
                "channel `{}` has no latency test (it is in-memory throughput only)",
                self.name()
            ))),
        };
        r.map_err(|e| e.context(self.name()))
    }

    /// Runs the one-way throughput test.
    ///
    /// # Errors
    /// The channel has no throughput test, is not available, or the run failed.
    pub fn throughput(self, size: usize, messages: u64) -> Result<ThroughputResult> {
        if size < 8 {
            return Err(BenchError(format!(
                "--size {size} is too small: a message carries an 8-byte sequence number"
            )));
        }
        let r = match self {
            #[cfg(feature = "conduit")]
            Channel::Shm | Channel::ShmMpsc => shm::throughput(self, size, messages),
            Channel::Crossbeam => crossbeam::throughput(size, messages),
            #[cfg(feature = "conduit")]
            Channel::Udp | Channel::UdpUring | Channel::UdpSocket | Channel::UdpAead => {
                udp::throughput(self, size, messages)
            }
            #[cfg(not(feature = "conduit"))]
            Channel::Shm
            | Channel::ShmMpsc
            | Channel::Udp
            | Channel::UdpUring
            | Channel::UdpSocket
            | Channel::UdpAead => Err(without_conduit()),
            #[cfg(feature = "conduit")]
            Channel::Proto => proto::throughput(size, messages, 0.0),
            #[cfg(feature = "conduit")]
            Channel::ProtoLoss => proto::throughput(size, messages, 0.01),
            #[cfg(not(feature = "conduit"))]
            Channel::Proto | Channel::ProtoLoss => Err(without_conduit()),
            Channel::Limit
            | Channel::Limit2Line
            | Channel::LimitRing
            | Channel::Iceoryx2
            | Channel::UdpRaw
            | Channel::UdpRawBlock
            | Channel::UdpBlock
            | Channel::UdpUringBlock
            | Channel::UdpSocketBlock => Err(BenchError(format!(
                "channel `{}` has no throughput test (available: shm, crossbeam, udp, udp-uring, udp-socket, udp-aead, proto, proto-loss)",
                self.name()
            ))),
        };
        r.map_err(|e| e.context(self.name()))
    }
}

/// What the parent tells a peer process (the `__pong` / `__send` subcommands).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct PeerArgs {
    /// Channel to run.
    #[arg(long, value_parser = Channel::parse)]
    pub channel: Channel,
    /// Payload bytes.
    #[arg(long, value_parser = crate::cli::parse_size)]
    pub size: usize,
    /// Messages to echo (pong) or send (sender).
    #[arg(long, value_parser = crate::cli::parse_count)]
    pub count: u64,
    /// Channel-specific rendezvous: a file path, a channel name, a port.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub param: String,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// The parent's pid (the peer dies with it).
    #[arg(long)]
    pub parent: u32,
}

impl PeerArgs {
    /// The arguments that give these options to a peer process.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--channel".to_string(),
            self.channel.name().to_string(),
            "--size".to_string(),
            self.size.to_string(),
            "--count".to_string(),
            self.count.to_string(),
            "--param".to_string(),
            self.param.clone(),
        ];
        if let Some(c) = self.cpu {
            v.push("--cpu".to_string());
            v.push(c.to_string());
        }
        v
    }
}

/// Buffer bytes every channel's throughput run gets: those of conduit's
/// default `shm:` ring (`capacity=1m`).
pub const BUFFER_BYTES: usize = 1 << 20;

/// How each peer is configured: the settings a user would choose for speed,
/// with the buffer bytes of conduit's default ring ([`BUFFER_BYTES`]).
/// `compare --help` and the report header print this; docs/benchmarks.md
/// ("Peers") says the same.
pub const PEERS: &[(&str, &str)] = &[
    (
        "shm",
        "conduit `shm:NAME?wait=spin`, default 1 MiB ring; offer (latency) and offer_with in place (throughput); busy-spin poll",
    ),
    (
        "shm-mpsc",
        "as `shm`, on a ring opened with `publishers=4` (the multi-writer claim path) and one active publisher",
    ),
    (
        "crossbeam",
        "crossbeam-channel bounded, [u8; N] messages, 1 MiB of slots (1 MiB / N: 32 768 at 32 B); try_send spin, try_recv spin, in-order sequence check; two threads",
    ),
    (
        "iceoryx2",
        "iceoryx2 ipc publish-subscribe of [u8], loan + write in place + send, 1 subscriber, buffer 1, history 0, safe overflow; busy-spin receive (round trips only)",
    ),
    (
        "udp-raw",
        "non-blocking std UdpSocket on 127.0.0.1, send/recv one datagram per message, busy-spin (udp-raw-block: blocking recv)",
    ),
];

impl Channel {
    /// How `self` is configured, for the peers (see [`PEERS`]).
    pub fn peer_config(self) -> Option<&'static str> {
        let name = match self {
            Channel::UdpRawBlock => "udp-raw",
            c => c.name(),
        };
        PEERS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }
}

/// The error for a conduit channel in a build without the `conduit` feature.
#[cfg(not(feature = "conduit"))]
pub fn without_conduit() -> BenchError {
    BenchError::msg("not available: conduit-bench was built without the `conduit` feature")
}

/// A name no other run (or other channel in this run) uses:
/// `cb-<pid>-<n>-<tag>`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("cb-{}-{n}-{tag}", std::process::id())
}

/// The CPUs ping and pong are pinned to, decided once per run (pinning the
/// main thread would otherwise hide the second CPU from later runs).
pub fn cpus() -> Option<(usize, usize)> {
    static CPUS: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *CPUS.get_or_init(pin::ping_pong_cpus)
}

/// How long the parent waits for a peer to finish after the last message.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs ping here against a pong process: spawns `__pong` with `param`, waits
/// for it to be ready, builds the ping end with `connect` (given the text of
/// the pong's ready line), and runs the round trips.
///
/// # Errors
/// The peer failed to start or failed, `connect` failed, or the run failed.
pub fn ping_with_peer<P: PingEnd>(
    channel: &str,
    cfg: &LatencyConfig,
    param: &str,
    connect: impl FnOnce(&str) -> Result<P>,
) -> Result<LatencyResult> {
    let (hist, ping, rss_pong) = against_peer(
        channel,
        "__pong",
        cfg,
        param,
        connect,
        |ping, watch| run_ping(ping, cfg, channel, watch),
        |ping| ping.try_recv().map(|_| ()),
    )?;
    let driver = ping.driver();
    drop(ping);
    Ok(latency_result(channel, cfg, hist, rss_pong, driver))
}

/// Like [`ping_with_peer`] for two channels interleaved in the same two
/// processes ([`run_ping_pair`]): spawns `__pong-pair`; `connect` builds
/// both ping ends. Each result counts `cfg.messages / 2` round trips.
///
/// # Errors
/// As [`ping_with_peer`].
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub fn ping_pair_with_peer<A: PingEnd, B: PingEnd>(
    names: (&str, &str),
    cfg: &LatencyConfig,
    param: &str,
    connect: impl FnOnce(&str) -> Result<(A, B)>,
) -> Result<(LatencyResult, LatencyResult)> {
    let label = format!("{} / {}", names.0, names.1);
    let ((ha, hb), (a, b), rss_pong) = against_peer(
        names.0,
        "__pong-pair",
        cfg,
        param,
        connect,
        |(a, b), watch| run_ping_pair(a, b, cfg, &label, watch),
        |(a, b)| {
            a.try_recv()?;
            b.try_recv().map(|_| ())
        },
    )?;
    let (da, db) = (a.driver(), b.driver());
    drop((a, b));
    let half = LatencyConfig {
        warmup: cfg.warmup / 2,
        ..*cfg
    };
    Ok((
        latency_result(names.0, &half, ha, rss_pong, da),
        latency_result(names.1, &half, hb, rss_pong, db),
    ))
}

/// Spawns the pong process (`role`), connects, pins, runs `run`, then keeps
/// our end polled with `drive` while pong winds down (a reliable transport
/// may wait for our acknowledgements before its process exits). Returns
/// what `run` measured, the ends, and pong's peak RSS in KiB.
fn against_peer<E, H>(
    channel: &str,
    role: &str,
    cfg: &LatencyConfig,
    param: &str,
    connect: impl FnOnce(&str) -> Result<E>,
    run: impl FnOnce(&mut E, &crate::spawn::PeerWatch) -> std::result::Result<H, Stop>,
    mut drive: impl FnMut(&mut E) -> Result<()>,
) -> Result<(H, E, u64)> {
    let cpus = cpus();
    let args = PeerArgs {
        channel: Channel::parse(channel)?,
        size: cfg.size,
        count: cfg.total(),
        param: param.to_string(),
        cpu: cpus.map(|c| c.1),
        parent: std::process::id(),
    };
    reset_peak();
    let mut peer = Peer::spawn(role, &args.to_args())?;
    let ready = peer.expect("READY", READY_TIMEOUT)?;
    let mut end = connect(&ready)?;
    pin::pin_optional(cpus.map(|c| c.0))?;
    let measured = match run(&mut end, &peer.watch()) {
        Ok(h) => h,
        Err(Stop::PeerGone) => return Err(peer.failure()),
        Err(Stop::Failed(e)) => return Err(e),
    };
    let rss_pong = peer.finish(FINISH_TIMEOUT, || drive(&mut end))?;
    Ok((measured, end, rss_pong))
}

fn latency_result(
    channel: &str,
    cfg: &LatencyConfig,
    hist: Histogram<u64>,
    rss_pong: u64,
    driver: Option<&'static str>,
) -> LatencyResult {
    LatencyResult {
        channel: channel.to_string(),
        size: cfg.size,
        messages: hist.len(),
        warmup: cfg.warmup,
        rate: cfg.rate,
        pct: Percentiles::of(&hist),
        rss_ping_kib: peak_rss_kib(),
        rss_pong_kib: Some(rss_pong),
        cpus: cpus(),
        processes: true,
        driver: driver.map(String::from),
        histogram: RawHistogram(hist),
    }
}

/// Runs the receiver here against a sender process (`__send`), the mirror of
/// [`ping_with_peer`] for one-way throughput.
///
/// # Errors
/// The peer failed to start or failed, `connect` failed, or the run failed.
#[cfg_attr(not(feature = "conduit"), allow(dead_code))]
pub fn rx_with_peer<R: RxEnd>(
    channel: &str,
    size: usize,
    messages: u64,
    param: &str,
    connect: impl FnOnce(&str) -> Result<R>,
) -> Result<ThroughputResult> {
    let cpus = cpus();
    let args = PeerArgs {
        channel: Channel::parse(channel)?,
        size,
        count: messages,
        param: param.to_string(),
        cpu: cpus.map(|c| c.1),
        parent: std::process::id(),
    };
    reset_peak();
    let mut peer = Peer::spawn("__send", &args.to_args())?;
    let ready = peer.expect("READY", READY_TIMEOUT)?;
    let mut rx = connect(&ready)?;
    pin::pin_optional(cpus.map(|c| c.0))?;
    let (elapsed, timed) = match run_rx(&mut rx, size, messages, channel, &peer.watch()) {
        Ok(r) => r,
        Err(Stop::PeerGone) => return Err(peer.failure()),
        Err(Stop::Failed(e)) => return Err(e),
    };
    // Keep receiving while the sender flushes: a reliable transport waits
    // for our acknowledgements before the sender's flush returns.
    let rss_tx = peer.finish(FINISH_TIMEOUT, || rx.poll(|_| Ok(())).map(|_| ()))?;
    let driver = rx.driver();
    let datagrams = rx.datagrams();
    drop(rx);
    let mut r = ThroughputResult {
        channel: channel.to_string(),
        size,
        messages,
        timed_messages: timed,
        elapsed,
        rss_rx_kib: peak_rss_kib(),
        rss_tx_kib: Some(rss_tx),
        processes: true,
        extra: Vec::new(),
        driver: driver.map(String::from),
    };
    if let Some((d, m)) = datagrams {
        // Over the whole run (handshake and status included): the timed
        // window's message rate divided by messages per datagram.
        let per = m as f64 / d.max(1) as f64;
        r.extra.push(("msgs_per_datagram".into(), per));
        r.extra
            .push(("datagrams_per_sec".into(), r.msgs_per_sec() / per.max(1e-9)));
    }
    Ok(r)
}

/// Entry point of a peer process: `role` is `__pong`, `__pong-pair` or `__send`.
///
/// # Errors
/// Setting up or running the peer side failed (the error is also sent to the
/// parent as an `ERROR` line).
pub fn peer_main(role: &str, args: &PeerArgs) -> Result<()> {
    let r = peer_run(role, args);
    if let Err(e) = &r {
        announce("ERROR", &e.to_string().replace('\n', " "));
    }
    r
}

fn peer_run(role: &str, args: &PeerArgs) -> Result<()> {
    child_init(args.parent)?;
    pin::pin_optional(args.cpu)?;
    let ready = |text: &str| announce("READY", text);
    match (role, args.channel) {
        ("__pong", Channel::Limit) => limit::pong(args, limit::Lines::One, ready)?,
        ("__pong", Channel::Limit2Line) => limit::pong(args, limit::Lines::Two, ready)?,
        ("__pong", Channel::LimitRing) => limit::pong(args, limit::Lines::Ring, ready)?,
        ("__pong", Channel::Iceoryx2) => iceoryx2::pong(args, ready)?,
        ("__pong", Channel::UdpRaw | Channel::UdpRawBlock) => udp_raw::pong(args, ready)?,
        #[cfg(feature = "conduit")]
        ("__pong", c) if matches!(c, Channel::Shm | Channel::ShmMpsc) || c.is_conduit_udp() => {
            conduit_api::pong(args, ready)?
        }
        #[cfg(feature = "conduit")]
        (
            "__send",
            Channel::Shm
            | Channel::ShmMpsc
            | Channel::Udp
            | Channel::UdpUring
            | Channel::UdpSocket
            | Channel::UdpAead,
        ) => conduit_api::send(args, ready)?,
        #[cfg(feature = "conduit")]
        ("__pong-pair", c) if c.is_conduit_udp() => udp::pong_vs_raw(args, ready)?,
        (role, c) => {
            return Err(BenchError(format!(
                "no {role} peer for channel `{}`",
                c.name()
            )))
        }
    }
    announce("RSS", &peak_rss_kib().to_string());
    Ok(())
}
