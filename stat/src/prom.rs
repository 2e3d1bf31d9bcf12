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
    channel: String,
    role: String,
    transport: String,
    pid: u32,
    slot: u32,
    process: String,
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

struct Families {
    reg: Registry,
}

impl Families {
    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        match unit {
            Some(u) => self.reg.register_with_unit(name, help, u, f.clone()),
            None => self.reg.register(name, help, f.clone()),
        }
        f
    }

    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>) -> Family<Labels, F64Gauge> {
        let f = Family::<Labels, F64Gauge>::default();
        match unit {
            Some(u) => self.reg.register_with_unit(name, help, u, f.clone()),
            None => self.reg.register(name, help, f.clone()),
        }
        f
    }
}

/// Encodes `snap` (rates and lag already derived) as OpenMetrics text.
pub fn encode_snapshot(snap: &Snapshot) -> String {
    let mut fam = Families {
        reg: Registry::default(),
    };
    let sent = fam.counter(
        "conduit_messages_sent",
        "Messages sent by a publication",
        None,
    );
    let received = fam.counter(
        "conduit_messages_received",
        "Messages delivered by a subscription",
        None,
    );
    let sent_bytes = fam.counter(
        "conduit_sent",
        "Payload bytes sent by a publication",
        Some(Unit::Bytes),
    );
    let received_bytes = fam.counter(
        "conduit_received",
        "Payload bytes delivered by a subscription",
        Some(Unit::Bytes),
    );
    let back_pressure = fam.counter(
        "conduit_back_pressure",
        "Offers refused for back-pressure",
        None,
    );
    let not_connected = fam.counter(
        "conduit_not_connected",
        "Offers refused because no subscriber was connected",
        None,
    );
    let naks_sent = fam.counter("conduit_naks_sent", "NAKs sent (UDP subscription)", None);
    let naks_received = fam.counter(
        "conduit_naks_received",
        "NAKs received (UDP publication)",
        None,
    );
    let retransmits = fam.counter(
        "conduit_retransmits",
        "Datagrams retransmitted (UDP publication)",
        None,
    );
    let retransmitted = fam.counter(
        "conduit_retransmitted",
        "Stream bytes retransmitted (UDP publication)",
        Some(Unit::Bytes),
    );
    let gaps = fam.counter(
        "conduit_gaps_detected",
        "Gaps detected (UDP subscription)",
        None,
    );
    let repaired = fam.counter("conduit_gaps_repaired", "Gaps repaired", None);
    let lost = fam.counter("conduit_gaps_unrecoverable", "Gaps declared lost", None);
    let evictions = fam.counter("conduit_evictions", "Slow-subscriber evictions", None);
    let dgram_sent = fam.counter("conduit_datagrams_sent", "Datagrams sent (UDP)", None);
    let dgram_received = fam.counter(
        "conduit_datagrams_received",
        "Datagrams received (UDP)",
        None,
    );
    let drops = Family::<DropLabels, Counter>::default();
    fam.reg.register(
        "conduit_drops",
        "Datagrams or records dropped, by reason",
        drops.clone(),
    );
    let position = fam.gauge(
        "conduit_position",
        "Publication: its position; subscription: its read position (shm: from the ring file)",
        Some(Unit::Bytes),
    );
    let peer_position = fam.gauge(
        "conduit_peer_position",
        "Publication: slowest subscriber or acknowledged position; subscription: the publisher position it knows",
        Some(Unit::Bytes),
    );
    let lag = fam.gauge(
        "conduit_lag",
        "Bytes a subscription is behind its publisher (publication: its slowest subscriber)",
        Some(Unit::Bytes),
    );
    let lag_s = fam.gauge(
        "conduit_lag",
        "The lag over the publisher's recent rate",
        Some(Unit::Seconds),
    );
    let rtt = fam.gauge(
        "conduit_rtt",
        "Smoothed round-trip time (UDP)",
        Some(Unit::Seconds),
    );
    let sessions = fam.gauge(
        "conduit_sessions",
        "UDP subscription: live sessions; UDP publication: receivers known",
        None,
    );
    let slots = fam.gauge(
        "conduit_subscriber_slots",
        "Subscriber slots in use (shm publication)",
        None,
    );
    let age = fam.gauge(
        "conduit_heartbeat_age",
        "Time since the handle last updated its counters",
        Some(Unit::Seconds),
    );
    let alive = fam.gauge(
        "conduit_alive",
        "1 when the process holding the handle is alive",
        None,
    );
    let slow = fam.gauge("conduit_slow", "1 for a slow subscription", None);
    let last_gap = fam.gauge(
        "conduit_last_gap_timestamp",
        "When the last gap was detected (Unix time)",
        Some(Unit::Seconds),
    );
    let last_loss = fam.gauge(
        "conduit_last_unrecoverable_timestamp",
        "When the last gap was declared lost (Unix time)",
        Some(Unit::Seconds),
    );

    for h in &snap.handles {
        let l = labels(h);
        let c = &h.counters;
        let is_pub = h.role == "publication";
        let udp = h.transport == "udp";
        if is_pub {
            sent.get_or_create(&l).inc_by(c.messages);
            sent_bytes.get_or_create(&l).inc_by(c.bytes);
            back_pressure.get_or_create(&l).inc_by(c.back_pressure);
            not_connected.get_or_create(&l).inc_by(c.not_connected);
        } else {
            received.get_or_create(&l).inc_by(c.messages);
            received_bytes.get_or_create(&l).inc_by(c.bytes);
        }
        if udp {
            if is_pub {
                naks_received.get_or_create(&l).inc_by(c.naks_received);
                retransmits.get_or_create(&l).inc_by(c.retransmits);
                retransmitted
                    .get_or_create(&l)
                    .inc_by(c.retransmitted_bytes);
            } else {
                naks_sent.get_or_create(&l).inc_by(c.naks_sent);
                gaps.get_or_create(&l).inc_by(c.gaps_detected);
                repaired.get_or_create(&l).inc_by(c.gaps_repaired);
                lost.get_or_create(&l).inc_by(c.gaps_unrecoverable);
                last_gap
                    .get_or_create(&l)
                    .set(c.last_gap_unix_ns as f64 / 1e9);
                last_loss
                    .get_or_create(&l)
                    .set(c.last_unrecoverable_unix_ns as f64 / 1e9);
            }
            dgram_sent.get_or_create(&l).inc_by(c.datagrams_sent);
            dgram_received
                .get_or_create(&l)
                .inc_by(c.datagrams_received);
            rtt.get_or_create(&l).set(c.rtt_ns as f64 / 1e9);
            sessions.get_or_create(&l).set(c.sessions as f64);
        } else {
            evictions.get_or_create(&l).inc_by(c.evictions);
            if is_pub {
                slots
                    .get_or_create(&l)
                    .set(c.subscriber_slots_in_use as f64);
            }
        }
        for (reason, n) in &h.drops {
            drops
                .get_or_create(&DropLabels {
                    channel: l.channel.clone(),
                    role: l.role.clone(),
                    transport: l.transport.clone(),
                    pid: l.pid,
                    slot: l.slot,
                    process: l.process.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        // shm: the ring's live positions where it could be read (the
        // counters file has them from cold paths only).
        let live = h.ring.as_ref().and_then(|r| {
            if is_pub {
                Some(r.position)
            } else {
                r.read_position
            }
        });
        position
            .get_or_create(&l)
            .set(live.unwrap_or(c.position) as f64);
        peer_position.get_or_create(&l).set(c.peer_position as f64);
        if let Some(v) = h.lag_bytes {
            lag.get_or_create(&l).set(v as f64);
        }
        if let Some(v) = h.lag_seconds {
            lag_s.get_or_create(&l).set(v);
        }
        if let Some(a) = h.heartbeat_age_s {
            age.get_or_create(&l).set(a);
        }
        alive.get_or_create(&l).set(if h.alive { 1.0 } else { 0.0 });
        if !is_pub {
            slow.get_or_create(&l).set(if h.slow { 1.0 } else { 0.0 });
        }
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &fam.reg);
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
