//! URI options of `udp://` channels, validated into a protocol
//! [`crate::proto::Config`] and a [`DriverConfig`].
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `driver` | `auto`, `uring`, `prefer-uring` (io_uring, else socket) or `socket` (else `CONDUIT_UDP_DRIVER`) | `auto` (socket) |
//! | `mtu` | largest datagram | 1408 |
//! | `window` | receiver window, power of two ≥ 4 × mtu | 256k |
//! | `retransmit` | sender's retransmit buffer, power of two | smallest that fits |
//! | `max_msg` | largest message, ≤ 16m | 1m |
//! | `liveness` | peer declared gone after this silence | 1s |
//! | `heartbeat` | idle heartbeat interval | 50ms |
//! | `status` | receiver status interval | 50ms |
//! | `nak_delay` | wait before NAKing a gap | 50us |
//! | `gap` | `fail` or `skip` on unrecoverable loss | `fail` |
//! | `stream` | stream id | 1 |
//! | `linger` | how long offered data may wait to fill datagrams (batching; implies `progress=thread`) | 0 (send at once) |
//! | `progress` | `inline`, or `thread` for a background progress thread | `inline` (`thread` with `linger`) |
//! | `wait` | `spin` or `block` for `poll_timeout` | `spin` |
//! | `rx_batch` | datagrams per receive call | 32 (8 with GRO) |
//! | `gso` | `on`/`off`: UDP GSO for batched sends | `on` |
//! | `gro` | `on`/`off`: UDP GRO (coalesced receive; off keeps the cheapest receive path) | `off` |
//! | `rcvbuf`, `sndbuf` | socket buffers | 4m |
//! | `bind` | local address of a publication | `0.0.0.0:0` |
//! | `checksum` | `on`/`off` | `on` |
//! | `key` | path of a 32-byte pre-shared key file: encrypt and authenticate every datagram (else `CONDUIT_UDP_KEY_FILE`) | none |
//! | `max_sessions` | subscription: most concurrent publisher sessions, 1..=1024 (1: one at a time, as before) | 16 |
//! | `iface` | multicast group only: the interface, by IPv4 address or name (IPv6 groups: a name) | the route's |
//! | `ttl` | multicast group only: hops (IPv4 TTL, IPv6 hop limit), 0..=255 | 1 |
//! | `flow` | multicast publication: `min`, `max` or `tagged` (see `docs/multicast.md`) | `min` |
//! | `group_tag` | `flow=tagged`: the tag that counts; subscription: the tag it declares | none |
//! | `min_receivers` | `flow=tagged`: tagged receivers needed to send | 1 |
//! | `receiver_timeout` | multicast publication: a silent receiver leaves the set after this | 2s |
//! | `tx` | multicast publication: `socket`, or `packet` to write the group's datagrams straight to the interface (IPv4, `iface=ADDR`, `CAP_NET_RAW`; no copy for the sending host: see `docs/multicast.md`) | `socket` |
//!
//! # Keys
//! `key=PATH` (or `CONDUIT_UDP_KEY_FILE=PATH` for every UDP channel of the
//! process; the URI wins) makes the channel keyed: both ends need the same
//! key. Make a key file with
//!
//! ```sh
//! head -c 32 /dev/urandom > conduit.key && chmod 600 conduit.key
//! ```
//!
//! It must be exactly 32 bytes, a regular file, and neither readable nor
//! writable by group or others; anything else is refused with an error
//! saying which. What a key protects and what it does not:
//! [`super::key_file`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::proto::{Config, FlowStrategy, GapPolicy};
use crate::uri::{ChannelUri, Scheme};
use crate::Error;

use super::driver::{DriverChoice, DriverConfig};
use super::key_file::{channel_key, KEY_ENV};
use super::sys::{interface_index, Multicast, MulticastIface};

/// How `poll_timeout` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// Busy-poll the socket.
    Spin,
    /// Block in the kernel (poll(2) or io_uring wait) between checks.
    Block,
}

/// Everything a UDP channel takes from its URI.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// The address in the URI: the destination of a publication, the bind
    /// address of a subscription.
    pub addr: SocketAddr,
    /// Local bind address of a publication.
    pub bind: Option<SocketAddr>,
    /// Protocol settings.
    pub proto: Config,
    /// Driver settings.
    pub driver: DriverConfig,
    /// How long offered data may wait to fill a datagram (0: sent at once).
    pub linger: Duration,
    /// Run a background progress thread (publication: also implied by
    /// `linger`).
    pub thread: bool,
    /// `progress=thread` was given explicitly (subscriptions start their
    /// thread only then).
    pub thread_requested: bool,
    /// `poll_timeout` wait mode.
    pub wait: WaitMode,
}

fn on_off(uri: &mut ChannelUri, key: &str, default: bool) -> Result<bool, Error> {
    Ok(
        match uri.take_choice(key, &["on", "off", "true", "false", "1", "0"])? {
            None => default,
            Some(v) => matches!(v.as_str(), "on" | "true" | "1"),
        },
    )
}

fn resolve(uri: &ChannelUri, host: &str, port: u16) -> Result<SocketAddr, Error> {
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| uri.invalid(format!("cannot resolve host {host:?}: {e}")))?;
    let all: Vec<SocketAddr> = addrs.by_ref().collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| uri.invalid(format!("host {host:?} has no address")))
}

impl UdpOptions {
    /// Takes every UDP option from `uri` (then calls `finish`, so an unknown
    /// key is an error).
    ///
    /// # Errors
    /// [`Error::InvalidUri`] naming the first bad option;
    /// [`Error::InvalidArgument`] when the key file named by
    /// `CONDUIT_UDP_KEY_FILE` cannot be used.
    pub fn from_uri(mut uri: ChannelUri) -> Result<UdpOptions, Error> {
        let Scheme::Udp { host, port } = uri.scheme.clone() else {
            return Err(uri.invalid("not a udp:// URI"));
        };
        let addr = resolve(&uri, &host, port)?;
        let mut p = Config::default();
        let mut d = DriverConfig::default();
        if let Some(v) = uri.take_choice(
            "driver",
            &["auto", "uring", "io_uring", "prefer-uring", "socket"],
        )? {
            d.choice = DriverChoice::parse(&v).unwrap_or_default();
        }
        if let Some(v) = uri.take_size("mtu")? {
            p.mtu = v;
        }
        if let Some(v) = uri.take_size("window")? {
            p.window = v;
        }
        if let Some(v) = uri.take_size("max_msg")? {
            p.max_message_len = v;
        }
        let retransmit = uri.take_size("retransmit")?;
        for (key, slot) in [
            ("liveness", &mut p.liveness_timeout),
            ("heartbeat", &mut p.heartbeat_interval),
            ("status", &mut p.status_interval),
            ("nak_delay", &mut p.nak_delay),
        ] {
            if let Some(v) = uri.take_duration(key)? {
                *slot = v;
            }
        }
        if let Some(v) = uri.take_choice("gap", &["fail", "skip"])? {
            p.gap_policy = if v == "skip" {
                GapPolicy::Skip
            } else {
                GapPolicy::Fail
            };
        }
        if let Some(v) = uri.take_u64("stream")? {
            p.stream_id = u32::try_from(v)
                .map_err(|_| uri.invalid(format!("stream={v}: must fit in 32 bits")))?;
        }
        p.checksum = on_off(&mut uri, "checksum", true)?;
        let key_option = uri.take_str("key");
        p.key = channel_key(
            &uri,
            key_option.as_deref(),
            std::env::var_os(KEY_ENV).as_deref(),
        )?;
        let linger = uri.take_duration("linger")?.unwrap_or(Duration::ZERO);
        if linger > Duration::from_secs(1) {
            return Err(uri.invalid(format!("linger={linger:?}: at most 1s")));
        }
        // Data lingering for a batch needs someone to send it when the
        // application stops offering: `linger` implies the background thread
        // unless `progress=inline` says the application calls often enough.
        let progress = uri.take_choice("progress", &["inline", "thread"])?;
        let thread_requested = progress.as_deref() == Some("thread");
        let thread = match progress.as_deref() {
            Some(p) => p == "thread",
            None => !linger.is_zero(),
        };
        let wait = match uri.take_choice("wait", &["spin", "block"])?.as_deref() {
            Some("block") => WaitMode::Block,
            _ => WaitMode::Spin,
        };
        d.gso = on_off(&mut uri, "gso", true)?;
        // GRO off by default: receiving then takes the cheaper `recvfrom`
        // latency path; `gro=on` helps a receiver of batched streams.
        d.gro = on_off(&mut uri, "gro", false)?;
        d.rx_batch = match uri.take_u64("rx_batch")? {
            Some(v) if (1..=1024).contains(&v) => v as usize,
            Some(v) => return Err(uri.invalid(format!("rx_batch={v}: expected 1..=1024"))),
            None if d.gro => 8,
            None => 32,
        };
        for (key, slot) in [("rcvbuf", &mut d.rcvbuf), ("sndbuf", &mut d.sndbuf)] {
            if let Some(v) = uri.take_size(key)? {
                if v > 1 << 30 {
                    return Err(uri.invalid(format!("{key}={v}: at most 1g")));
                }
                *slot = v;
            }
        }
        let bind = match uri.take_str("bind") {
            None => None,
            Some(b) => Some(
                b.parse::<SocketAddr>()
                    .map_err(|e| uri.invalid(format!("bind={b:?}: {e} (expected IP:PORT)")))?,
            ),
        };
        if let Some(v) = uri.take_u64("max_sessions")? {
            let max = crate::proto::MAX_SESSIONS_LIMIT;
            if v == 0 || v > max as u64 {
                return Err(uri.invalid(format!("max_sessions={v}: expected 1..={max}")));
            }
            p.max_sessions = v as usize;
        }
        if !(crate::proto::MIN_MTU..=crate::proto::MAX_MTU).contains(&p.mtu) {
            return Err(uri.invalid(format!(
                "mtu={}: expected {}..={}",
                p.mtu,
                crate::proto::MIN_MTU,
                crate::proto::MAX_MTU
            )));
        }
        // The retransmit buffer must hold a window, the largest message and a
        // datagram; by default take the smallest power of two that does.
        p.retransmit_buffer = match retransmit {
            Some(r) => r,
            None => p
                .window
                .checked_add(p.framed_len(p.max_message_len.min(16 << 20)))
                .and_then(|n| n.checked_add(p.mtu))
                .and_then(usize::checked_next_power_of_two)
                .unwrap_or(usize::MAX),
        };
        d.multicast = multicast_options(&mut uri, addr, &mut p)?;
        p.validate().map_err(|e| uri.invalid(e))?;
        d.max_datagram = p.mtu;
        d.single_thread = !thread;
        uri.finish()?;
        Ok(UdpOptions {
            addr,
            bind,
            proto: p,
            driver: d,
            linger,
            thread,
            thread_requested,
            wait,
        })
    }

    /// Bytes of memory the channel allocates in user space, at most: the
    /// protocol's buffer (`retransmit` for a publication; for a
    /// subscription, per session `window` + 64 KiB scratch + up to `max_msg`
    /// reassembly (+ 64 KiB keyed), for one session with `max_sessions=1`,
    /// else for `max_sessions` + 1 (the sessions and the acceptor of new
    /// ones)) plus the driver's receive ring (`rx_batch` × slot, slot = 64
    /// KiB with GRO, else `mtu`) and send staging (64 × `mtu`, at most 1
    /// MiB).
    pub fn memory_bound(&self, publication: bool) -> usize {
        let proto = if publication {
            self.proto.retransmit_buffer
        } else {
            let keyed = if self.proto.key.is_some() { 65_536 } else { 0 };
            let per_session = self.proto.window + 65_536 + keyed + self.proto.max_message_len;
            let receivers = match self.proto.max_sessions {
                1 => 1,
                n => n + 1,
            };
            per_session * receivers
        };
        proto + self.driver.rx_buffer_bytes() + tx_staging_bytes(self.proto.mtu)
    }
}

/// The multicast options (`iface`, `ttl`, `flow`, `group_tag`,
/// `min_receivers`, `receiver_timeout`): a group address takes them all; any
/// other address takes only `group_tag` (a subscription declares its tag)
/// and refuses the rest.
fn multicast_options(
    uri: &mut ChannelUri,
    addr: SocketAddr,
    p: &mut Config,
) -> Result<Option<Multicast>, Error> {
    let group_tag = match uri.take_u64("group_tag")? {
        Some(v) => Some(
            u32::try_from(v)
                .map_err(|_| uri.invalid(format!("group_tag={v}: must fit in 32 bits")))?,
        ),
        None => None,
    };
    p.group_tag = group_tag;
    let iface = uri.take_str("iface");
    let ttl = uri.take_u64("ttl")?;
    let flow = uri.take_choice("flow", &["min", "max", "tagged"])?;
    let min_receivers = uri.take_u64("min_receivers")?;
    let timeout = uri.take_duration("receiver_timeout")?;
    let tx = uri.take_choice("tx", &["socket", "packet"])?;
    if !addr.ip().is_multicast() {
        for (key, given) in [
            ("tx", tx.is_some()),
            ("iface", iface.is_some()),
            ("ttl", ttl.is_some()),
            ("flow", flow.is_some()),
            ("min_receivers", min_receivers.is_some()),
            ("receiver_timeout", timeout.is_some()),
        ] {
            if given {
                return Err(uri.invalid(format!("{key}= is only for a multicast group address")));
            }
        }
        return Ok(None);
    }
    if p.key.is_some() {
        return Err(uri.invalid(
            "key= with a multicast group is not supported yet (per-receiver session keys cannot seal one datagram for the group)",
        ));
    }
    let iface = match iface {
        None => None,
        Some(i) => Some(match i.parse::<std::net::Ipv4Addr>() {
            Ok(a) if addr.is_ipv4() => MulticastIface::Addr(a),
            _ => MulticastIface::Index(interface_index(&i).ok_or_else(|| {
                uri.invalid(format!(
                    "iface={i:?}: no such interface (an IPv4 address for an IPv4 group, or an interface name)"
                ))
            })?),
        }),
    };
    let packet = tx.as_deref() == Some("packet");
    if packet
        && !matches!(
            (addr, iface),
            (SocketAddr::V4(_), Some(MulticastIface::Addr(_)))
        )
    {
        return Err(uri.invalid(
            "tx=packet needs an IPv4 group and iface=ADDR (the interface's IPv4 address, the source of every datagram)",
        ));
    }
    let ttl = match ttl {
        None => 1,
        Some(v) => {
            u8::try_from(v).map_err(|_| uri.invalid(format!("ttl={v}: expected 0..=255")))?
        }
    };
    if let Some(t) = timeout {
        p.receiver_timeout = t;
    }
    p.flow = match flow.as_deref() {
        Some("max") => FlowStrategy::Max,
        Some("tagged") => {
            let Some(tag) = group_tag else {
                return Err(uri.invalid("flow=tagged needs group_tag="));
            };
            let min = min_receivers.unwrap_or(1);
            let min_receivers = u32::try_from(min)
                .ok()
                .filter(|&m| (1..=crate::proto::MAX_RECEIVERS as u32).contains(&m))
                .ok_or_else(|| {
                    uri.invalid(format!(
                        "min_receivers={min}: expected 1..={}",
                        crate::proto::MAX_RECEIVERS
                    ))
                })?;
            FlowStrategy::Tagged { tag, min_receivers }
        }
        _ => {
            if min_receivers.is_some() {
                return Err(uri.invalid("min_receivers= is only for flow=tagged"));
            }
            FlowStrategy::Min
        }
    };
    Ok(Some(Multicast {
        group: addr,
        iface,
        ttl,
        join: false,
        packet,
    }))
}

/// Where a group subscription binds its unicast socket: an ephemeral port on
/// the group's interface address (IPv4 `iface=ADDR`), else on every address.
pub(crate) fn group_subscription_bind(m: &Multicast) -> SocketAddr {
    match (m.group, m.iface) {
        (SocketAddr::V4(_), Some(MulticastIface::Addr(a))) => SocketAddr::from((a, 0)),
        (SocketAddr::V4(_), _) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (SocketAddr::V6(_), _) => SocketAddr::from(([0u16; 8], 0)),
    }
}

/// Size of a publication's send staging area: up to 64 datagrams, at most 1 MiB.
pub fn tx_staging_bytes(mtu: usize) -> usize {
    tx_slots(mtu) * mtu
}

/// Datagrams staged per send batch.
pub fn tx_slots(mtu: usize) -> usize {
    (1usize << 20).div_euclid(mtu.max(1)).clamp(1, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Result<UdpOptions, Error> {
        UdpOptions::from_uri(ChannelUri::parse(s)?)
    }

    #[test]
    fn defaults_and_overrides() {
        let o = opts("udp://127.0.0.1:40000").unwrap();
        assert_eq!(o.addr, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(o.proto.mtu, 1408);
        assert!(o.proto.retransmit_buffer.is_power_of_two());
        let o = opts(
            "udp://127.0.0.1:1?driver=socket&mtu=8k&window=1m&max_msg=4m&liveness=300ms\
             &heartbeat=20ms&status=20ms&nak_delay=20us&gap=skip&stream=9&linger=20us\
             &progress=thread&wait=block&gso=off&gro=off&rx_batch=16&rcvbuf=1m&bind=127.0.0.1:0",
        )
        .unwrap();
        assert_eq!(o.driver.choice, DriverChoice::Socket);
        assert_eq!(o.proto.mtu, 8192);
        assert_eq!(o.proto.gap_policy, GapPolicy::Skip);
        assert_eq!(o.proto.stream_id, 9);
        assert!(o.thread && !o.driver.single_thread);
        assert_eq!(o.wait, WaitMode::Block);
        assert_eq!(o.driver.rx_batch, 16);
        assert!(o.memory_bound(true) >= o.proto.retransmit_buffer);
    }

    #[test]
    fn multicast_options() {
        let o = opts("udp://239.1.2.3:4000?iface=127.0.0.1&ttl=4&flow=tagged&group_tag=9&min_receivers=3&receiver_timeout=5s")
            .unwrap();
        let m = o.driver.multicast.unwrap();
        assert_eq!(m.group, "239.1.2.3:4000".parse().unwrap());
        assert_eq!(m.iface, Some(MulticastIface::Addr([127, 0, 0, 1].into())));
        assert_eq!((m.ttl, m.join), (4, false));
        assert_eq!(
            o.proto.flow,
            FlowStrategy::Tagged {
                tag: 9,
                min_receivers: 3
            }
        );
        assert_eq!(o.proto.receiver_timeout, Duration::from_secs(5));
        let o = opts("udp://[ff02::1:2]:4000?iface=lo&flow=max").unwrap();
        let m = o.driver.multicast.unwrap();
        assert!(matches!(m.iface, Some(MulticastIface::Index(i)) if i > 0));
        assert_eq!(o.proto.flow, FlowStrategy::Max);
        assert_eq!(m.ttl, 1);
        // A unicast subscription may declare its tag; nothing else changes.
        let o = opts("udp://127.0.0.1:4000?group_tag=5").unwrap();
        assert_eq!(o.proto.group_tag, Some(5));
        assert!(o.driver.multicast.is_none());
        // tx=packet: an IPv4 group on an interface given by its address.
        let o = opts("udp://239.1.2.3:4000?iface=127.0.0.1&tx=packet").unwrap();
        assert!(o.driver.multicast.unwrap().packet);
        let o = opts("udp://239.1.2.3:4000?iface=127.0.0.1&tx=socket").unwrap();
        assert!(!o.driver.multicast.unwrap().packet);
    }

    #[test]
    fn bad_options_name_themselves() {
        for (uri, word) in [
            ("udp://127.0.0.1:1?driver=dpdk", "driver"),
            ("udp://127.0.0.1:1?mtu=10", "mtu"),
            ("udp://127.0.0.1:1?window=1000", "window"),
            ("udp://127.0.0.1:1?max_msg=64m", "message"),
            ("udp://127.0.0.1:1?liveness=1ms", "liveness"),
            ("udp://127.0.0.1:1?gap=maybe", "gap"),
            ("udp://127.0.0.1:1?rx_batch=0", "rx_batch"),
            ("udp://127.0.0.1:1?bind=nowhere", "bind"),
            ("udp://127.0.0.1:1?colour=blue", "colour"),
            ("udp://127.0.0.1:1?stream=99999999999", "stream"),
            ("udp://127.0.0.1:1?max_sessions=0", "max_sessions"),
            ("udp://127.0.0.1:1?max_sessions=1025", "max_sessions"),
            ("udp://127.0.0.1:1?ttl=3", "ttl"),
            ("udp://127.0.0.1:1?flow=min", "flow"),
            ("udp://239.1.1.1:1?ttl=300", "ttl"),
            ("udp://239.1.1.1:1?flow=fastest", "flow"),
            ("udp://239.1.1.1:1?flow=tagged", "group_tag"),
            (
                "udp://239.1.1.1:1?flow=tagged&group_tag=1&min_receivers=65",
                "min_receivers",
            ),
            ("udp://239.1.1.1:1?min_receivers=2", "min_receivers"),
            ("udp://239.1.1.1:1?iface=no-such-if0", "iface"),
            ("udp://127.0.0.1:1?tx=packet", "tx"),
            ("udp://239.1.1.1:1?tx=raw", "tx"),
            ("udp://239.1.1.1:1?tx=packet", "iface=ADDR"),
            ("udp://239.1.1.1:1?tx=packet&iface=lo", "iface=ADDR"),
            ("udp://[ff02::1:2]:1?tx=packet&iface=lo", "IPv4"),
        ] {
            let e = opts(uri).unwrap_err().to_string();
            assert!(e.contains(word), "{uri}: {e}");
        }
    }
}
