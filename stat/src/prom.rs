//! `conduit-stat --prometheus ADDR`: `/metrics` in the OpenMetrics text
//! format (which Prometheus scrapes natively), encoded by the Prometheus
//! project's `prometheus-client` from a fresh registry per scrape.

use crate::model::{Handle, Snapshot};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of every per-handle metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    channel: String,
    role: String,
    transport: String,
    pid: u32,
    slot: u32,
    process: String,
}

/// The labels of a drop counter: the handle's and the reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    #[prometheus(flatten)]
    handle: Labels,
    reason: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

fn labels(h: &Handle) -> Labels {
    Labels {
        channel: h.channel.clone(),
        role: h.role.to_owned(),
        transport: h.transport.to_owned(),
        pid: h.pid,
        slot: h.slot,
        process: h.process_name.clone(),
    }
}

/// How a per-handle metric reads its value from a handle: `None` where the
/// handle has no such metric (no series is made for it).
type Pick<T> = fn(&Handle) -> Option<T>;

/// A per-handle metric: name, help, unit and value.
type Metric<T> = (&'static str, &'static str, Option<Unit>, Pick<T>);

fn is_pub(h: &Handle) -> bool {
    h.role == "publication"
}

fn udp(h: &Handle) -> bool {
    h.transport == "udp"
}

/// `v` where `when` holds.
fn when<T>(when: bool, v: T) -> Option<T> {
    when.then_some(v)
}

/// The counters, in the order of the exposition.
#[rustfmt::skip]
const COUNTERS: &[Metric<u64>] = &[
    ("conduit_messages_sent", "Messages sent by a publication", None,
        |h| when(is_pub(h), h.counters.messages)),
    ("conduit_messages_received", "Messages delivered by a subscription", None,
        |h| when(!is_pub(h), h.counters.messages)),
    ("conduit_sent", "Payload bytes sent by a publication", Some(Unit::Bytes),
        |h| when(is_pub(h), h.counters.bytes)),
    ("conduit_received", "Payload bytes delivered by a subscription", Some(Unit::Bytes),
        |h| when(!is_pub(h), h.counters.bytes)),
    ("conduit_back_pressure", "Offers refused for back-pressure", None,
        |h| when(is_pub(h), h.counters.back_pressure)),
    ("conduit_not_connected", "Offers refused because no subscriber was connected", None,
        |h| when(is_pub(h), h.counters.not_connected)),
    ("conduit_naks_sent", "NAKs sent (UDP subscription)", None,
        |h| when(udp(h) && !is_pub(h), h.counters.naks_sent)),
    ("conduit_naks_received", "NAKs received (UDP publication)", None,
        |h| when(udp(h) && is_pub(h), h.counters.naks_received)),
    ("conduit_retransmits", "Datagrams retransmitted (UDP publication)", None,
        |h| when(udp(h) && is_pub(h), h.counters.retransmits)),
    ("conduit_retransmitted", "Stream bytes retransmitted (UDP publication)", Some(Unit::Bytes),
        |h| when(udp(h) && is_pub(h), h.counters.retransmitted_bytes)),
    ("conduit_gaps_detected", "Gaps detected (UDP subscription)", None,
        |h| when(udp(h) && !is_pub(h), h.counters.gaps_detected)),
    ("conduit_gaps_repaired", "Gaps repaired", None,
        |h| when(udp(h) && !is_pub(h), h.counters.gaps_repaired)),
    ("conduit_gaps_unrecoverable", "Gaps declared lost", None,
        |h| when(udp(h) && !is_pub(h), h.counters.gaps_unrecoverable)),
    ("conduit_evictions", "Slow-subscriber evictions", None,
        |h| when(!udp(h), h.counters.evictions)),
    ("conduit_datagrams_sent", "Datagrams sent (UDP)", None,
        |h| when(udp(h), h.counters.datagrams_sent)),
    ("conduit_datagrams_received", "Datagrams received (UDP)", None,
        |h| when(udp(h), h.counters.datagrams_received)),
];

/// The gauges, in the order of the exposition (after the counters and the
/// drops).
#[rustfmt::skip]
const GAUGES: &[Metric<f64>] = &[
    ("conduit_position",
        "Publication: its position; subscription: its read position (shm: from the ring file)",
        Some(Unit::Bytes), |h| Some(position(h) as f64)),
    ("conduit_peer_position",
        "Publication: slowest subscriber or acknowledged position; subscription: the publisher position it knows",
        Some(Unit::Bytes), |h| Some(h.counters.peer_position as f64)),
    ("conduit_lag",
        "Bytes a subscription is behind its publisher (publication: its slowest subscriber)",
        Some(Unit::Bytes), |h| h.lag_bytes.map(|v| v as f64)),
    ("conduit_lag", "The lag over the publisher's recent rate", Some(Unit::Seconds),
        |h| h.lag_seconds),
    ("conduit_rtt", "Smoothed round-trip time (UDP)", Some(Unit::Seconds),
        |h| when(udp(h), h.counters.rtt_ns as f64 / 1e9)),
    ("conduit_sessions", "UDP subscription: live sessions; UDP publication: receivers known", None,
        |h| when(udp(h), h.counters.sessions as f64)),
    ("conduit_subscriber_slots", "Subscriber slots in use (shm publication)", None,
        |h| when(!udp(h) && is_pub(h), h.counters.subscriber_slots_in_use as f64)),
    ("conduit_heartbeat_age", "Time since the handle last updated its counters", Some(Unit::Seconds),
        |h| h.heartbeat_age_s),
    ("conduit_alive", "1 when the process holding the handle is alive", None,
        |h| Some(if h.alive { 1.0 } else { 0.0 })),
    ("conduit_slow", "1 for a slow subscription", None,
        |h| when(!is_pub(h), if h.slow { 1.0 } else { 0.0 })),
    ("conduit_last_gap_timestamp", "When the last gap was detected (Unix time)", Some(Unit::Seconds),
        |h| when(udp(h) && !is_pub(h), h.counters.last_gap_unix_ns as f64 / 1e9)),
    ("conduit_last_unrecoverable_timestamp", "When the last gap was declared lost (Unix time)",
        Some(Unit::Seconds),
        |h| when(udp(h) && !is_pub(h), h.counters.last_unrecoverable_unix_ns as f64 / 1e9)),
];

/// The handle's position: `shm:`, the ring's live one where the ring file
/// could be read (the counters file has it from cold paths only).
fn position(h: &Handle) -> u64 {
    let live = h.ring.as_ref().and_then(|r| {
        if is_pub(h) {
            Some(r.position)
        } else {
            r.read_position
        }
    });
    live.unwrap_or(h.counters.position)
}

/// Registers a family of `M` per metric of `table` in `reg`.
fn register<M, T>(reg: &mut Registry, table: &[Metric<T>]) -> Vec<Family<Labels, M>>
where
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    table
        .iter()
        .map(|(name, help, unit, _)| {
            let f = Family::<Labels, M>::default();
            match unit {
                Some(u) => reg.register_with_unit(*name, *help, u.clone(), f.clone()),
                None => reg.register(*name, *help, f.clone()),
            }
            f
        })
        .collect()
}

/// Encodes `snap` (rates and lag already derived) as OpenMetrics text.
pub fn encode_snapshot(snap: &Snapshot) -> String {
    let mut reg = Registry::default();
    let counters = register::<Counter, _>(&mut reg, COUNTERS);
    let drops = Family::<DropLabels, Counter>::default();
    reg.register(
        "conduit_drops",
        "Datagrams or records dropped, by reason",
        drops.clone(),
    );
    let gauges = register::<F64Gauge, _>(&mut reg, GAUGES);
    for h in &snap.handles {
        let l = labels(h);
        for ((.., pick), f) in COUNTERS.iter().zip(&counters) {
            if let Some(v) = pick(h) {
                f.get_or_create(&l).inc_by(v);
            }
        }
        for (reason, n) in &h.drops {
            drops
                .get_or_create(&DropLabels {
                    handle: l.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        for ((.., pick), f) in GAUGES.iter().zip(&gauges) {
            if let Some(v) = pick(h) {
                f.get_or_create(&l).set(v);
            }
        }
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Serves `/metrics` on `addr` until the process is killed. Each scrape
/// reads the counters files afresh; rates and lag time are against the
/// previous scrape.
pub fn serve(
    addr: &str,
    read: impl Fn(Option<&Snapshot>) -> Snapshot,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let server = tiny_http::Server::http(addr)?;
    match server.server_addr() {
        tiny_http::ListenAddr::IP(a) => println!("serving http://{a}/metrics"),
        #[allow(unreachable_patterns)]
        other => println!("serving {other}"),
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let mut prev: Option<Snapshot> = None;
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let resp = if path == "/metrics" {
            let snap = read(prev.as_ref());
            for w in &snap.warnings {
                eprintln!("conduit-stat: warning: {w}");
            }
            let body = encode_snapshot(&snap);
            prev = Some(snap);
            let ct = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                .map_err(|()| "bad header")?;
            tiny_http::Response::from_string(body).with_header(ct)
        } else {
            tiny_http::Response::from_string("conduit-stat: see /metrics\n").with_status_code(404)
        };
        if let Err(e) = req.respond(resp) {
            eprintln!("conduit-stat: warning: response failed: {e}");
        }
    }
    Ok(())
}
