//! `udp`, `udp-uring`, `udp-socket`: conduit over UDP on 127.0.0.1
//! (`udp://127.0.0.1:PORT`, with `?driver=uring|socket` for the forced
//! variants), busy-spinning, between two processes; `udp-block`,
//! `udp-uring-block`, `udp-socket-block`: the same with `wait=block`, each
//! subscription waiting in the kernel; `udp-aead`: `udp` with a pre-shared
//! key (`key=PATH`, a fresh 32-byte 0600 file in the temporary directory for
//! each run, removed after it), so every datagram is encrypted and
//! authenticated; `udp-multicast`: a group publication to a group
//! subscription each way (`udp://239.255.0.N:PORT?iface=127.0.0.1`), and
//! `udp-netns`: `udp` again, both with the two processes in a private
//! network namespace ([`super::netns`]); `udp-multicast-veth` and
//! `udp-veth`: the same two across a veth pair between two namespaces
//! ([`super::veth`]), each end naming its own veth address as `iface`, or
//! the unicast subscription's address. The endpoints live in
//! [`super::conduit_api`]; this module picks ports and URIs, and runs a
//! conduit channel interleaved with `udp-raw` in the same two processes
//! ([`latency_vs_raw`]), or a multicast channel interleaved with its
//! unicast control ([`multicast_vs_unicast`]).

use std::io::Read;
use std::net::UdpSocket;
use std::path::PathBuf;

#[cfg(feature = "conduit")]
use super::conduit_api;
use super::{
    ping_pair_with_peer, ping_with_peer, udp_raw, unique_name, veth, Channel, PeerArgs, Route, Wait,
};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong_pair, LatencyConfig};
use crate::report::{LatencyResult, ThroughputResult};

/// A loopback port that was free a moment ago (the kernel picks it).
fn free_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| BenchError(format!("cannot bind a UDP socket on 127.0.0.1: {e}")))?;
    Ok(s.local_addr()?.port())
}

/// The key file of a keyed run: 32 bytes from the OS random source in a
/// new file only its owner can read (conduit refuses any other), removed
/// when dropped, after both processes have opened their channels.
struct RunKey(PathBuf);

impl RunKey {
    /// A key file for `channel` when it is keyed.
    ///
    /// # Errors
    /// The random source cannot be read or the file cannot be written.
    fn for_channel(channel: Channel) -> Result<Option<RunKey>> {
        if channel != Channel::UDP_AEAD {
            return Ok(None);
        }
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| BenchError(format!("cannot read /dev/urandom: {e}")))?;
        let path = std::env::temp_dir().join(unique_name("aead.key"));
        conduit_test_util::write_key_file(&path, &key)
            .map_err(|e| BenchError(format!("cannot write key file {}: {e}", path.display())))?;
        Ok(Some(RunKey(path)))
    }
}

impl Drop for RunKey {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Every conduit UDP URI of the bench: a peer is declared gone after 30 s
/// of silence instead of 1 s. In a round trip each side drives only its
/// subscription while it waits for the other, so its publication is silent
/// (no heartbeat) for as long as the other process is: on a loaded machine
/// a process not scheduled for a second made the other's subscription
/// report `peer gone`, and the process that failed then closed its
/// publication, which the first one reported as `poll: closed`. The bench
/// has its own, longer bound for a stalled run
/// ([`crate::latency::PING_IDLE_TIMEOUT`], 20 s), which now fires first,
/// with a clear message.
pub const STALL_OPTIONS: &str = "liveness=30s";

/// The same for a group publication's receiver set: a receiver silent for
/// 30 s (not 2 s) leaves it.
pub const GROUP_STALL_OPTIONS: &str = "receiver_timeout=30s";

/// Which process opens a URI: the two ends of a veth channel name
/// different interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ping,
    Pong,
}

/// The URI of one direction as `side` opens it: `n` (1 or 2) picks the
/// group of a multicast channel, or (1: ping to pong, 2: pong to ping) the
/// subscriber's address across a veth.
fn uri(channel: Channel, n: u8, port: u16, key: Option<&RunKey>, side: Side) -> Result<String> {
    let Channel::Udp(udp) = channel else {
        return Err(BenchError(format!(
            "`{}` is not a conduit UDP channel",
            channel.name()
        )));
    };
    let mut options: Vec<String> = udp.driver.option().map(String::from).into_iter().collect();
    options.push(STALL_OPTIONS.to_string());
    if udp.route.is_multicast() {
        options.push(GROUP_STALL_OPTIONS.to_string());
    }
    if udp.wait == Wait::Block {
        options.push("wait=block".to_string());
    }
    if let Some(k) = key {
        options.push(format!("key={}", k.0.display()));
    }
    let host = match udp.route {
        Route::Multicast => {
            options.push("iface=127.0.0.1".to_string());
            format!("239.255.0.{n}")
        }
        Route::MulticastVeth | Route::MulticastPacketVeth => {
            let (iface, publishes) = match side {
                Side::Ping => (veth::PING_ADDR, n == 1),
                Side::Pong => (veth::PONG_ADDR, n == 2),
            };
            options.push(format!("iface={iface}"));
            if udp.route == Route::MulticastPacketVeth && publishes {
                options.push("tx=packet".to_string());
            }
            format!("239.255.0.{n}")
        }
        Route::Veth if n == 1 => veth::PONG_ADDR.to_string(),
        Route::Veth => veth::PING_ADDR.to_string(),
        Route::Unicast | Route::Aead | Route::Netns => "127.0.0.1".to_string(),
    };
    Ok(if options.is_empty() {
        format!("udp://{host}:{port}")
    } else {
        format!("udp://{host}:{port}?{}", options.join("&"))
    })
}

/// The URIs of a round trip over `channel`: ping's two (ping to pong, pong
/// to ping), and pong's two as its parameter `A2B|B2A`.
struct Uris {
    a2b: String,
    b2a: String,
    pong: String,
}

impl Uris {
    fn new(channel: Channel, key: Option<&RunKey>) -> Result<Uris> {
        let (p1, p2) = (free_port()?, free_port()?);
        Ok(Uris {
            a2b: uri(channel, 1, p1, key, Side::Ping)?,
            b2a: uri(channel, 2, p2, key, Side::Ping)?,
            pong: format!(
                "{}|{}",
                uri(channel, 1, p1, key, Side::Pong)?,
                uri(channel, 2, p2, key, Side::Pong)?
            ),
        })
    }
}

/// Runs a conduit UDP latency test (the veth channels inside
/// [`veth::run`], the other namespace ones inside [`super::netns::run`]).
///
/// # Errors
/// See [`conduit_api::latency`].
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let key = RunKey::for_channel(channel)?;
    let uris = Uris::new(channel, key.as_ref())?;
    let ping = conduit_api::open_ping(&uris.a2b, &uris.b2a, cfg.size, channel.blocks())?;
    ping_with_peer(channel.name(), cfg, &uris.pong, move |_| {
        conduit_api::attach(ping)
    })
}

/// Runs conduit over UDP and the bare socket in the same wait mode
/// (`udp-raw` or `udp-raw-block`) in the same two processes, alternating
/// blocks of round trips between them
/// ([`crate::latency::run_ping_pair`]): both see the same vCPU placement
/// and the same neighbours, so their ratio does not carry the drift between
/// two separate runs. Returns (conduit, bare socket); each counts about half
/// of `cfg.messages`.
///
/// # Errors
/// As [`latency`] and [`udp_raw::latency`]; `channel` has no bare-socket
/// baseline (it runs in a private namespace).
pub fn latency_vs_raw(
    channel: Channel,
    cfg: &LatencyConfig,
) -> Result<(LatencyResult, LatencyResult)> {
    let raw_channel = channel.raw_baseline().ok_or_else(|| {
        BenchError(format!(
            "`{}` is not measured against the bare socket",
            channel.name()
        ))
    })?;
    let key = RunKey::for_channel(channel)?;
    let uris = Uris::new(channel, key.as_ref())?;
    let block = channel.blocks();
    let ping = conduit_api::open_ping(&uris.a2b, &uris.b2a, cfg.size, block)?;
    let (sock, raw_port) = udp_raw::ping_socket(cfg.size, block)?;
    let param = format!("{raw_port}|{}", uris.pong);
    ping_pair_with_peer(
        (channel.name(), raw_channel.name()),
        cfg,
        &param,
        move |ready| {
            let raw = udp_raw::connect_ping(sock, ready, cfg.size)?;
            Ok((conduit_api::attach(ping)?, raw))
        },
    )
}

/// Runs `udp-multicast` and `udp-netns` in the same two processes of one
/// private network namespace (or `udp-multicast-veth` and `udp-veth`
/// across the veth pair), alternating blocks of round trips between them as
/// [`latency_vs_raw`] does: multicast against unicast with everything else
/// equal. `multicast` is [`Channel::UDP_MULTICAST`] or
/// [`Channel::UDP_MULTICAST_VETH`]; call it inside the namespace
/// ([`super::netns::run`], [`veth::run`]). Returns (multicast, unicast);
/// each counts about half of `cfg.messages`.
///
/// # Errors
/// A channel cannot be opened, the peer failed, or the run failed.
pub fn multicast_vs_unicast(
    multicast: Channel,
    cfg: &LatencyConfig,
) -> Result<(LatencyResult, LatencyResult)> {
    let unicast = unicast_control(multicast)?;
    let m = Uris::new(multicast, None)?;
    let u = Uris::new(unicast, None)?;
    let m_ping = conduit_api::open_ping(&m.a2b, &m.b2a, cfg.size, false)?;
    let u_ping = conduit_api::open_ping(&u.a2b, &u.b2a, cfg.size, false)?;
    let param = format!("{}|{}", m.pong, u.pong);
    ping_pair_with_peer((multicast.name(), unicast.name()), cfg, &param, move |_| {
        let m_ping = conduit_api::attach(m_ping)?;
        Ok((m_ping, conduit_api::attach(u_ping)?))
    })
}

/// The unicast control of a conduit multicast channel.
fn unicast_control(multicast: Channel) -> Result<Channel> {
    match multicast {
        Channel::UDP_MULTICAST => Ok(Channel::UDP_NETNS),
        Channel::UDP_MULTICAST_VETH | Channel::UDP_MULTICAST_PACKET_VETH => Ok(Channel::UDP_VETH),
        c => Err(BenchError(format!(
            "`{}` is not a multicast channel with a unicast control",
            c.name()
        ))),
    }
}

/// The pong side of [`latency_vs_raw`] (`param` is `RAW_PORT|A2B|B2A`) and
/// of [`multicast_vs_unicast`] (`param` is `A2B|B2A|A2B|B2A`, multicast
/// first; `--channel` is the multicast one).
///
/// # Errors
/// Bad parameter, a channel or socket cannot be opened, or the run failed.
pub fn pong_pair(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let bad = || BenchError(format!("bad parameter `{}`", args.param));
    let block = args.channel.blocks();
    if unicast_control(args.channel).is_ok() {
        return conduit_api::pong_two(args, block, ready);
    }
    let (raw_port, uris) = args.param.split_once('|').ok_or_else(bad)?;
    let mut conduit = conduit_api::open_pong(uris, args.size, block)?;
    let (mut raw, port) = udp_raw::open_pong(raw_port, args.size, block)?;
    ready(&port.to_string());
    run_pong_pair(&mut conduit, &mut raw, args.count)
}

/// Options of the throughput runs: batch for up to 50 µs into datagrams of up
/// to 60 KiB (loopback's MTU is 64 KiB) within a 16 MiB window. With the
/// defaults (`linger=0`) every offer is sent at once, one datagram per
/// message, which is right for latency and wrong for bulk transfer.
pub const THROUGHPUT_OPTIONS: &str = "linger=50us&window=16m&mtu=60k";

/// Runs a conduit UDP one-way throughput test (sender in another process),
/// with [`THROUGHPUT_OPTIONS`].
///
/// # Errors
/// See [`conduit_api::throughput`].
pub fn throughput(channel: Channel, size: usize, messages: u64) -> Result<ThroughputResult> {
    let key = RunKey::for_channel(channel)?;
    let base = uri(channel, 1, free_port()?, key.as_ref(), Side::Ping)?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let uri = format!("{base}{sep}{THROUGHPUT_OPTIONS}");
    conduit_api::throughput(channel, size, messages, &uri)
}
