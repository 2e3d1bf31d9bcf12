//! The channels the benchmark knows, and the plumbing that runs a channel's
//! two sides in two processes (or two threads).

#[cfg(feature = "conduit")]
pub mod conduit_api;
pub mod crossbeam;
pub mod iceoryx2;
pub mod limit;
pub mod netns;
#[cfg(feature = "conduit")]
pub mod proto;
#[cfg(feature = "conduit")]
pub mod shm;
#[cfg(feature = "conduit")]
pub mod udp;
pub mod udp_raw;
pub mod udp_raw_multicast;
pub mod veth;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
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

/// A channel under test: what carries the messages (the variant), and for
/// the UDP channels the I/O driver and how a receiver waits. Names are
/// derived from the parts (`udp` + `-uring` + `-block`); [`Channel::all`]
/// lists every valid combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Cache lines bounced between two processes, no software: `limit`
    /// (one line, the physical limit), `limit-2line` (one line per
    /// direction: the floor for a channel per direction), `limit-ring` (a
    /// fresh line per message, as a 1 MiB ring moves through memory).
    Limit(limit::Lines),
    /// conduit over shared memory.
    Shm,
    /// conduit over shared memory on a ring opened for four publishers
    /// (`publishers=4`, the multi-writer path) with one active.
    ShmMpsc,
    /// crossbeam-channel between two threads.
    Crossbeam,
    /// iceoryx2 publish-subscribe between two processes.
    Iceoryx2,
    /// As [`Channel::Iceoryx2`] on services opened for four publishers
    /// (`max_publishers(4)`) with one active: the peer of `shm-mpsc`.
    Iceoryx2Mpsc,
    /// Plain UDP sockets on loopback: the kernel limit for UDP, spinning
    /// (`udp-raw`) or asleep in `recv` (`udp-raw-block`).
    UdpRaw(Wait),
    /// Plain UDP sockets through one multicast group each way on `lo` of a
    /// private network namespace, spinning: the kernel limit for UDP
    /// multicast (`udp-raw-multicast`).
    UdpRawMulticast,
    /// Plain UDP sockets across a veth pair between two network namespaces
    /// (`udp-raw-veth`), spinning: the kernel limit for the veth channels.
    UdpRawVeth,
    /// Plain UDP sockets through one multicast group each way across that
    /// veth pair, spinning: the kernel limit for UDP multicast between two
    /// hosts (`udp-raw-multicast-veth`).
    UdpRawMulticastVeth,
    /// conduit over UDP.
    Udp(Udp),
    /// conduit's protocol core alone, sender to receiver in memory, with no
    /// loss (`proto`) or 1 % random loss (`proto-loss`).
    Proto {
        /// 1 % random loss.
        loss: bool,
    },
}

/// How a receiver waits for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Busy-spins on its channel.
    Spin,
    /// Sleeps in the kernel until a datagram arrives (`wait=block`).
    Block,
}

impl Wait {
    fn suffix(self) -> &'static str {
        match self {
            Wait::Spin => "",
            Wait::Block => "-block",
        }
    }
}

/// conduit's UDP I/O driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Whatever conduit picks (io_uring where available).
    Default,
    /// `driver=uring`.
    Uring,
    /// `driver=socket`.
    Socket,
}

impl Driver {
    fn suffix(self) -> &'static str {
        match self {
            Driver::Default => "",
            Driver::Uring => "-uring",
            Driver::Socket => "-socket",
        }
    }

    /// The URI option that forces the driver, if any.
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    pub fn option(self) -> Option<&'static str> {
        match self {
            Driver::Default => None,
            Driver::Uring => Some("driver=uring"),
            Driver::Socket => Some("driver=socket"),
        }
    }
}

/// What a conduit UDP channel's URIs address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `udp://127.0.0.1:PORT` in the host's namespace.
    Unicast,
    /// As [`Route::Unicast`] with a pre-shared key (`key=PATH`): every
    /// datagram encrypted and authenticated.
    Aead,
    /// A group publication to a group subscription in each direction
    /// (`udp://239.255.0.N:PORT?iface=127.0.0.1`), both processes in a
    /// private network namespace whose `lo` carries multicast.
    Multicast,
    /// As [`Route::Unicast`], both processes in a private network namespace
    /// set up as for [`Route::Multicast`]: its control.
    Netns,
    /// As [`Route::Multicast`] across a veth pair between two network
    /// namespaces, ping in one, pong in the other
    /// (`udp://239.255.0.N:PORT?iface=<own veth address>`): no sender's
    /// namespace has a member of the group it sends to.
    MulticastVeth,
    /// Unicast across that veth pair (`udp://<subscriber's veth
    /// address>:PORT`): the control of [`Route::MulticastVeth`].
    Veth,
    /// As [`Route::MulticastVeth`], the publications with `tx=packet` (their
    /// datagrams written to the veth by a packet socket).
    MulticastPacketVeth,
}

impl Route {
    /// Every route, in the order the channels list them.
    const ALL: [Route; 7] = [
        Route::Unicast,
        Route::Aead,
        Route::Multicast,
        Route::Netns,
        Route::MulticastVeth,
        Route::Veth,
        Route::MulticastPacketVeth,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::Unicast => "udp",
            Route::Aead => "udp-aead",
            Route::Multicast => "udp-multicast",
            Route::Netns => "udp-netns",
            Route::MulticastVeth => "udp-multicast-veth",
            Route::Veth => "udp-veth",
            Route::MulticastPacketVeth => "udp-multicast-packet-veth",
        }
    }

    /// The drivers measured on this route.
    fn drivers(self) -> &'static [Driver] {
        match self {
            Route::Unicast => &[Driver::Default, Driver::Uring, Driver::Socket],
            _ => &[Driver::Default],
        }
    }

    /// The wait modes measured on this route.
    fn waits(self) -> &'static [Wait] {
        match self {
            Route::Unicast => &[Wait::Spin, Wait::Block],
            _ => &[Wait::Spin],
        }
    }

    /// Whether both processes run in a private network namespace.
    pub fn in_netns(self) -> bool {
        matches!(self, Route::Multicast | Route::Netns)
    }

    /// Whether the URIs name multicast groups.
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    pub fn is_multicast(self) -> bool {
        matches!(
            self,
            Route::Multicast | Route::MulticastVeth | Route::MulticastPacketVeth
        )
    }

    /// Whether the processes run in two namespaces joined by a veth pair.
    pub fn in_veth(self) -> bool {
        matches!(
            self,
            Route::MulticastVeth | Route::Veth | Route::MulticastPacketVeth
        )
    }
}

/// A conduit UDP channel's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    /// What the URIs address.
    pub route: Route,
    /// The I/O driver.
    pub driver: Driver,
    /// How the subscriptions wait.
    pub wait: Wait,
}

impl Channel {
    /// `udp`: conduit over UDP, default driver, spinning.
    pub const UDP: Channel = Channel::Udp(Udp {
        route: Route::Unicast,
        driver: Driver::Default,
        wait: Wait::Spin,
    });

    /// `udp-aead`.
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    pub const UDP_AEAD: Channel = Channel::Udp(Udp {
        route: Route::Aead,
        ..Udp::plain()
    });

    /// `udp-multicast`.
    pub const UDP_MULTICAST: Channel = Channel::Udp(Udp {
        route: Route::Multicast,
        ..Udp::plain()
    });

    /// `udp-netns`.
    pub const UDP_NETNS: Channel = Channel::Udp(Udp {
        route: Route::Netns,
        ..Udp::plain()
    });

    /// `udp-multicast-veth`.
    pub const UDP_MULTICAST_VETH: Channel = Channel::Udp(Udp {
        route: Route::MulticastVeth,
        ..Udp::plain()
    });

    /// `udp-veth`.
    pub const UDP_VETH: Channel = Channel::Udp(Udp {
        route: Route::Veth,
        ..Udp::plain()
    });

    /// `udp-multicast-packet-veth`.
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    pub const UDP_MULTICAST_PACKET_VETH: Channel = Channel::Udp(Udp {
        route: Route::MulticastPacketVeth,
        ..Udp::plain()
    });

    /// `limit`: the physical limit every round trip is set against.
    pub const LIMIT: Channel = Channel::Limit(limit::Lines::One);

    /// Every valid channel, in the order `compare` runs them.
    pub fn all() -> &'static [Channel] {
        static ALL: OnceLock<Vec<Channel>> = OnceLock::new();
        ALL.get_or_init(|| {
            use limit::Lines;
            let mut v = vec![
                Channel::Limit(Lines::One),
                Channel::Limit(Lines::Two),
                Channel::Limit(Lines::Ring),
                Channel::Shm,
                Channel::ShmMpsc,
                Channel::Crossbeam,
                Channel::Iceoryx2,
                Channel::Iceoryx2Mpsc,
            ];
            for wait in [Wait::Spin, Wait::Block] {
                v.push(Channel::UdpRaw(wait));
                if wait == Wait::Spin {
                    v.push(Channel::UdpRawMulticast);
                    v.push(Channel::UdpRawVeth);
                    v.push(Channel::UdpRawMulticastVeth);
                }
                for route in Route::ALL {
                    if !route.waits().contains(&wait) {
                        continue;
                    }
                    for &driver in route.drivers() {
                        v.push(Channel::Udp(Udp {
                            route,
                            driver,
                            wait,
                        }));
                    }
                }
            }
            v.push(Channel::Proto { loss: false });
            v.push(Channel::Proto { loss: true });
            v
        })
    }

    /// The channel's command-line name, composed from its parts once. A
    /// combination [`Channel::all`] does not list (say `udp-aead` with
    /// `wait=block`) is not a channel and is named `(not a channel)`.
    pub fn name(self) -> &'static str {
        static NAMES: OnceLock<Vec<String>> = OnceLock::new();
        let names = NAMES.get_or_init(|| Channel::all().iter().map(|c| c.compose_name()).collect());
        Channel::all()
            .iter()
            .position(|&c| c == self)
            .map_or("(not a channel)", |i| names[i].as_str())
    }

    /// The name from the parts.
    fn compose_name(self) -> String {
        match self {
            Channel::Limit(l) => l.name().to_string(),
            Channel::Shm => "shm".to_string(),
            Channel::ShmMpsc => "shm-mpsc".to_string(),
            Channel::Crossbeam => "crossbeam".to_string(),
            Channel::Iceoryx2 => "iceoryx2".to_string(),
            Channel::Iceoryx2Mpsc => "iceoryx2-mpsc".to_string(),
            Channel::UdpRaw(w) => format!("udp-raw{}", w.suffix()),
            Channel::UdpRawMulticast => "udp-raw-multicast".to_string(),
            Channel::UdpRawVeth => "udp-raw-veth".to_string(),
            Channel::UdpRawMulticastVeth => "udp-raw-multicast-veth".to_string(),
            Channel::Udp(u) => {
                format!("{}{}{}", u.route.name(), u.driver.suffix(), u.wait.suffix())
            }
            Channel::Proto { loss } => if loss { "proto-loss" } else { "proto" }.to_string(),
        }
    }

    /// Parses a command-line name.
    ///
    /// # Errors
    /// Unknown name; the message lists the known ones.
    pub fn parse(s: &str) -> Result<Channel> {
        Channel::all()
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                BenchError(format!(
                    "unknown channel `{s}` (known: {})",
                    names(Channel::all().iter().copied())
                ))
            })
    }

    /// Whether the channel is conduit's (and so needs the `conduit` feature).
    pub fn is_conduit(self) -> bool {
        matches!(
            self,
            Channel::Shm | Channel::ShmMpsc | Channel::Udp(_) | Channel::Proto { .. }
        )
    }

    /// Whether this build can run the channel.
    pub fn available(self) -> bool {
        cfg!(feature = "conduit") || !self.is_conduit()
    }

    /// conduit over UDP (any route, driver, wait mode).
    pub fn is_conduit_udp(self) -> bool {
        matches!(self, Channel::Udp(_))
    }

    /// Any UDP channel, conduit or the bare socket.
    pub fn is_udp(self) -> bool {
        matches!(
            self,
            Channel::Udp(_)
                | Channel::UdpRaw(_)
                | Channel::UdpRawMulticast
                | Channel::UdpRawVeth
                | Channel::UdpRawMulticastVeth
        )
    }

    /// How the receivers wait.
    pub fn wait(self) -> Wait {
        match self {
            Channel::UdpRaw(w) | Channel::Udp(Udp { wait: w, .. }) => w,
            _ => Wait::Spin,
        }
    }

    /// Whether the receivers block in the kernel instead of spinning.
    pub fn blocks(self) -> bool {
        self.wait() == Wait::Block
    }

    /// Whether both processes run in a private network namespace.
    pub fn in_netns(self) -> bool {
        matches!(self, Channel::Udp(u) if u.route.in_netns()) || self == Channel::UdpRawMulticast
    }

    /// Whether the processes run in two network namespaces joined by a veth
    /// pair ([`veth`]).
    pub fn in_veth(self) -> bool {
        matches!(self, Channel::Udp(u) if u.route.in_veth())
            || matches!(self, Channel::UdpRawVeth | Channel::UdpRawMulticastVeth)
    }

    /// The bare-socket channel in the same wait mode: what a conduit UDP
    /// channel of the host's namespace is measured against, interleaved.
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    pub fn raw_baseline(self) -> Option<Channel> {
        match self {
            Channel::Udp(u) if !u.route.in_netns() && !u.route.in_veth() => {
                Some(Channel::UdpRaw(u.wait))
            }
            _ => None,
        }
    }

    /// Whether the channel has a round-trip (latency) test.
    pub fn has_latency(self) -> bool {
        !matches!(self, Channel::Proto { .. })
    }

    /// Whether the channel has a one-way throughput test.
    pub fn has_throughput(self) -> bool {
        match self {
            Channel::Shm | Channel::ShmMpsc | Channel::Crossbeam | Channel::Proto { .. } => true,
            Channel::Udp(u) => {
                matches!(u.route, Route::Unicast | Route::Aead) && u.wait == Wait::Spin
            }
            Channel::Limit(_)
            | Channel::Iceoryx2
            | Channel::Iceoryx2Mpsc
            | Channel::UdpRaw(_)
            | Channel::UdpRawMulticast
            | Channel::UdpRawVeth
            | Channel::UdpRawMulticastVeth => false,
        }
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
        if !self.available() {
            return Err(without_conduit().context(self.name()));
        }
        let r = match self {
            Channel::Limit(lines) => limit::latency(cfg, lines),
            #[cfg(feature = "conduit")]
            Channel::Shm | Channel::ShmMpsc => shm::latency(self, cfg),
            Channel::Crossbeam => crossbeam::latency(cfg),
            Channel::Iceoryx2 | Channel::Iceoryx2Mpsc => iceoryx2::latency(self, cfg),
            Channel::UdpRaw(_) => udp_raw::latency(self, cfg),
            Channel::UdpRawMulticast => netns::run(|| udp_raw_multicast::latency(self, cfg)),
            Channel::UdpRawVeth => veth::run(|| udp_raw::latency(self, cfg)),
            Channel::UdpRawMulticastVeth => veth::run(|| udp_raw_multicast::latency(self, cfg)),
            #[cfg(feature = "conduit")]
            Channel::Udp(u) if u.route.in_netns() => netns::run(|| udp::latency(self, cfg)),
            #[cfg(feature = "conduit")]
            Channel::Udp(u) if u.route.in_veth() => veth::run(|| udp::latency(self, cfg)),
            #[cfg(feature = "conduit")]
            Channel::Udp(_) => udp::latency(self, cfg),
            Channel::Proto { .. } => Err(BenchError(format!(
                "channel `{}` has no latency test (it is in-memory throughput only)",
                self.name()
            ))),
            #[cfg(not(feature = "conduit"))]
            Channel::Shm | Channel::ShmMpsc | Channel::Udp(_) => Err(without_conduit()),
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
        if !self.has_throughput() {
            return Err(BenchError(format!(
                "channel `{}` has no throughput test (available: {})",
                self.name(),
                names(
                    Channel::all()
                        .iter()
                        .copied()
                        .filter(|c| c.has_throughput())
                )
            )));
        }
        if !self.available() {
            return Err(without_conduit().context(self.name()));
        }
        let r = match self {
            #[cfg(feature = "conduit")]
            Channel::Shm | Channel::ShmMpsc => shm::throughput(self, size, messages),
            Channel::Crossbeam => crossbeam::throughput(size, messages),
            #[cfg(feature = "conduit")]
            Channel::Udp(_) => udp::throughput(self, size, messages),
            #[cfg(feature = "conduit")]
            Channel::Proto { loss } => {
                proto::throughput(size, messages, if loss { 0.01 } else { 0.0 })
            }
            _ => Err(BenchError(format!(
                "channel `{}` has no throughput test",
                self.name()
            ))),
        };
        r.map_err(|e| e.context(self.name()))
    }
}

/// `a, b, c`: the names of `channels`.
fn names(channels: impl Iterator<Item = Channel>) -> String {
    channels.map(Channel::name).collect::<Vec<_>>().join(", ")
}

impl Udp {
    /// Unicast on the host's namespace, default driver, spinning.
    const fn plain() -> Udp {
        Udp {
            route: Route::Unicast,
            driver: Driver::Default,
            wait: Wait::Spin,
        }
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
        "iceoryx2-mpsc",
        "as `iceoryx2`, on services opened with max_publishers(4) (the peer of shm-mpsc) and one active publisher",
    ),
    (
        "udp-multicast",
        "conduit `udp://239.255.0.N:PORT?iface=127.0.0.1` each way (group publication to group subscription), both processes in a private network namespace whose lo carries multicast",
    ),
    (
        "udp-netns",
        "conduit `udp://127.0.0.1:PORT` in a private network namespace set up as for udp-multicast: its unicast control",
    ),
    (
        "udp-multicast-veth",
        "conduit `udp://239.255.0.N:PORT?iface=10.200.0.X` each way (group publication to group subscription, iface the sender's or joiner's own veth address), ping and pong in two network namespaces joined by a veth pair (default offloads: no GRO), so no sender's namespace has a member of its group",
    ),
    (
        "udp-veth",
        "conduit `udp://10.200.0.X:PORT` (the subscriber's veth address) across the veth pair of udp-multicast-veth: its unicast control",
    ),
    (
        "udp-multicast-packet-veth",
        "udp-multicast-veth with `tx=packet` on both publications: each writes its group datagrams to its veth through a packet socket (no route lookup, no multicast loopback copy)",
    ),
    (
        "udp-raw",
        "non-blocking std UdpSocket on 127.0.0.1, send/recv one datagram per message, busy-spin (udp-raw-block: blocking recv)",
    ),
    (
        "udp-raw-multicast",
        "non-blocking std UdpSocket bound to and joined to group 239.255.1.N on 127.0.0.1, sending from a second socket (IP_MULTICAST_IF 127.0.0.1) connected to the other group, busy-spin; in a private network namespace set up as for udp-multicast",
    ),
    (
        "udp-raw-veth",
        "udp-raw across the veth pair of udp-multicast-veth (sockets on 10.200.0.1 and 10.200.0.2)",
    ),
    (
        "udp-raw-multicast-veth",
        "udp-raw-multicast across the veth pair of udp-multicast-veth, each side joined and sending on its own veth address (IP_MULTICAST_LOOP on, as conduit's sockets)",
    ),
];

impl Channel {
    /// How `self` is configured, for the peers (see [`PEERS`]).
    pub fn peer_config(self) -> Option<&'static str> {
        let name = match self {
            Channel::UdpRaw(_) => "udp-raw",
            c => c.name(),
        };
        PEERS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }
}

/// The error for a conduit channel in a build without the `conduit` feature.
pub fn without_conduit() -> BenchError {
    BenchError::msg("not available: conduit-bench was built without the `conduit` feature")
}

/// The result of a libc call that returns 0 or -1 and sets `errno`:
/// call it right after, before anything else can set `errno`.
pub(crate) fn os_result(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
    // Across a veth pair, pong runs in the other namespace.
    let mut peer = veth::spawn_peer(|| Peer::spawn(role, &args.to_args()))?;
    let ready = peer.expect("READY", READY_TIMEOUT)?;
    let mut end = connect(&ready)?;
    pin::pin_optional(cpus.map(|c| c.0))?;
    let measured = match run(&mut end, &peer.watch()) {
        Ok(h) => h,
        Err(Stop::PeerGone) => return Err(peer.failure()),
        Err(Stop::Failed(e)) => return Err(prefer_peer_error(&mut peer, e)),
    };
    let rss_pong = peer.finish(FINISH_TIMEOUT, || drive(&mut end))?;
    Ok((measured, end, rss_pong))
}

/// How long a failed run waits for the peer's own error ([`prefer_peer_error`]).
const PEER_ERROR_GRACE: Duration = Duration::from_secs(2);

/// The error of a run that failed here (`ours`), or the peer's if it failed
/// first: a peer that fails closes its channels on its way out, which our
/// end reports (`poll: closed`) before the peer's `ERROR` line arrives.
fn prefer_peer_error(peer: &mut Peer, ours: BenchError) -> BenchError {
    match peer.expect("ERROR", PEER_ERROR_GRACE) {
        Ok(theirs) => BenchError(format!("peer process failed: {theirs} (here: {ours})")),
        Err(_) => ours,
    }
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
        Err(Stop::Failed(e)) => return Err(prefer_peer_error(&mut peer, e)),
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
        ("__pong", Channel::Limit(lines)) => limit::pong(args, lines, ready)?,
        ("__pong", Channel::Iceoryx2 | Channel::Iceoryx2Mpsc) => iceoryx2::pong(args, ready)?,
        ("__pong", Channel::UdpRaw(_) | Channel::UdpRawVeth) => udp_raw::pong(args, ready)?,
        ("__pong", Channel::UdpRawMulticast | Channel::UdpRawMulticastVeth) => {
            udp_raw_multicast::pong(args, false, ready)?
        }
        ("__pong-pair", Channel::UdpRawMulticast | Channel::UdpRawMulticastVeth) => {
            udp_raw_multicast::pong(args, true, ready)?
        }
        #[cfg(feature = "conduit")]
        ("__pong", Channel::Shm | Channel::ShmMpsc | Channel::Udp(_)) => {
            conduit_api::pong(args, ready)?
        }
        #[cfg(feature = "conduit")]
        ("__send", c @ (Channel::Shm | Channel::ShmMpsc | Channel::Udp(_)))
            if c.has_throughput() =>
        {
            conduit_api::send(args, ready)?
        }
        #[cfg(feature = "conduit")]
        ("__pong-pair", Channel::Udp(_)) => udp::pong_pair(args, ready)?,
        #[cfg(feature = "conduit")]
        ("__pong-pair", Channel::ShmMpsc) => shm::pong_pair(args, ready)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names saved runs (docs/compare.json) and the docs use.
    const NAMES_BEFORE_THE_PARTS: [&str; 18] = [
        "limit",
        "limit-2line",
        "limit-ring",
        "shm",
        "shm-mpsc",
        "crossbeam",
        "iceoryx2",
        "udp-raw",
        "udp",
        "udp-uring",
        "udp-socket",
        "udp-aead",
        "udp-raw-block",
        "udp-block",
        "udp-uring-block",
        "udp-socket-block",
        "proto",
        "proto-loss",
    ];

    #[test]
    fn names_are_unique_and_parse_back() {
        let all = Channel::all();
        for (i, &c) in all.iter().enumerate() {
            assert_eq!(Channel::parse(c.name()).unwrap(), c);
            assert!(
                all[..i].iter().all(|d| d.name() != c.name()),
                "{} twice",
                c.name()
            );
        }
        assert!(Channel::parse("udp-multicast-uring").is_err());
        assert!(Channel::parse("udp-aead-block").is_err());
    }

    #[test]
    fn the_old_names_are_kept() {
        for name in NAMES_BEFORE_THE_PARTS {
            assert_eq!(Channel::parse(name).unwrap().name(), name);
        }
        assert_eq!(Channel::all().len(), NAMES_BEFORE_THE_PARTS.len() + 9);
        for name in [
            "iceoryx2-mpsc",
            "udp-multicast",
            "udp-netns",
            "udp-raw-multicast",
            "udp-multicast-veth",
            "udp-veth",
            "udp-raw-veth",
            "udp-raw-multicast-veth",
        ] {
            assert!(Channel::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn the_parts_decide_the_properties() {
        let p = |s: &str| Channel::parse(s).unwrap();
        assert_eq!(
            p("udp-uring-block"),
            Channel::Udp(Udp {
                route: Route::Unicast,
                driver: Driver::Uring,
                wait: Wait::Block
            })
        );
        assert_eq!(
            p("udp-socket-block").raw_baseline(),
            Some(p("udp-raw-block"))
        );
        assert_eq!(p("udp-aead").raw_baseline(), Some(p("udp-raw")));
        assert_eq!(p("udp-multicast").raw_baseline(), None);
        assert!(p("udp-multicast").in_netns() && p("udp-netns").in_netns());
        assert!(p("udp-raw-multicast").in_netns() && p("udp-raw-multicast").is_udp());
        assert!(!p("udp-raw-multicast").is_conduit_udp() && !p("udp-raw").in_netns());
        assert_eq!(p("udp-raw-multicast").raw_baseline(), None);
        assert!(p("udp-raw-multicast").peer_config().is_some());
        assert!(!p("udp").in_netns());
        for name in [
            "udp-multicast-veth",
            "udp-multicast-packet-veth",
            "udp-veth",
            "udp-raw-veth",
            "udp-raw-multicast-veth",
        ] {
            let c = p(name);
            assert!(c.in_veth() && !c.in_netns() && c.is_udp(), "{name}");
            assert!(!c.has_throughput() && c.raw_baseline().is_none(), "{name}");
            assert!(c.peer_config().is_some(), "{name}");
        }
        assert!(!p("udp-multicast").in_veth() && !p("udp").in_veth());
        assert!(p("udp-raw-block").blocks() && !p("udp-raw").blocks());
        assert!(p("udp-multicast").is_udp() && p("udp-raw").is_udp());
        assert!(!p("udp-raw").is_conduit_udp());
        let with_throughput: Vec<&str> = Channel::all()
            .iter()
            .filter(|c| c.has_throughput())
            .map(|c| c.name())
            .collect();
        assert_eq!(
            with_throughput,
            [
                "shm",
                "shm-mpsc",
                "crossbeam",
                "udp",
                "udp-uring",
                "udp-socket",
                "udp-aead",
                "proto",
                "proto-loss"
            ]
        );
        assert!(p("proto").is_conduit() && !p("iceoryx2-mpsc").is_conduit());
        assert_eq!(p("udp-raw-block").peer_config(), p("udp-raw").peer_config());
        assert!(p("iceoryx2-mpsc").peer_config().is_some());
    }
}
