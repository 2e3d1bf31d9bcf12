//! The seed corpus: programs for each target, the datagram ones carrying real
//! datagrams captured from a simulated exchange of the harness's own
//! (deterministic) endpoints, so the session ids and positions in them match.
//!
//! `cargo test --test corpus -- --ignored write_seeds` writes them to
//! `corpus/<target>/`; the other tests there replay every corpus file.

use std::time::Duration;

use crate::net::{self, MTU};

/// An input under construction.
#[derive(Default, Clone)]
pub struct Program(pub Vec<u8>);

impl Program {
    fn b(&mut self, bytes: &[u8]) -> &mut Program {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Op 0 of both datagram targets: a datagram from the usual peer, as is.
    fn raw(&mut self, d: &[u8]) -> &mut Program {
        assert!(d.len() < 2 * MTU);
        self.b(&[0, 7])
            .b(&(d.len() as u16).to_le_bytes())
            .b(d)
            .b(&[0])
    }
}

/// Time steps of the seeds: `ms` milliseconds as (units of 256 us, scale 2).
fn time(ms: u64) -> [u8; 3] {
    let units = (ms * 1000 / 256) as u16;
    let [a, b] = units.to_le_bytes();
    [a, b, 2]
}

/// Every seed: (target, name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, p) in receiver_seeds() {
        out.push(("receiver_datagram", name, p.0));
    }
    for (name, p) in sender_seeds() {
        out.push(("sender_datagram", name, p.0));
    }
    for (i, u) in URIS.iter().enumerate() {
        out.push(("uri_parse", format!("uri-{i:02}"), u.as_bytes().to_vec()));
    }
    for (name, p) in ring_seeds() {
        out.push(("ring_scribble", name, p.0));
    }
    for (name, bytes) in counters_seeds() {
        out.push(("counters_file", name, bytes));
    }
    for (name, p) in sessions_seeds() {
        out.push(("sessions_datagram", name, p.0));
    }
    out
}

/// Programs of the sessions target (its first byte picks 1, 2 or 3 places):
/// the three senders connect and stream, with time passing, a sender
/// restarting on its address, a sender going silent past the liveness
/// timeout, and the senders closing.
fn sessions_seeds() -> Vec<(String, Program)> {
    // Every datagram in flight delivered, the answers too, a few times over
    // (the cookie handshake takes two round trips).
    let exchange = |p: &mut Program| {
        for _ in 0..4 {
            p.b(&[9]);
        }
    };
    let offers = |p: &mut Program, senders: &[u8]| {
        for &i in senders {
            for (t, len) in [(1u32, 8u16), (2, 300), (3, 2000)] {
                p.b(&[3, i])
                    .b(&t.to_le_bytes())
                    .b(&len.to_le_bytes())
                    .b(&[i]);
            }
        }
    };
    let stream = |places: u8| {
        let mut p = Program::default();
        p.b(&[places]);
        exchange(&mut p);
        offers(&mut p, &[0, 1, 2]);
        exchange(&mut p);
        p.b(&[8]).b(&time(2));
        exchange(&mut p);
        p
    };
    let mut seeds = Vec::new();
    for places in 0..3u8 {
        seeds.push((format!("stream-{}-places", places + 1), stream(places)));
    }
    // Sender 0 restarts on its address: its new session replaces the old.
    let mut p = stream(1);
    p.b(&[10, 0]);
    exchange(&mut p);
    offers(&mut p, &[0]);
    exchange(&mut p);
    seeds.push(("restart".to_string(), p));
    // Sender 2 goes silent past the liveness timeout while the others go on;
    // every place taken, it comes back.
    let mut p = stream(1);
    for _ in 0..4 {
        p.b(&[8]).b(&time(100));
        offers(&mut p, &[0, 1]);
        exchange(&mut p);
    }
    p.b(&[8]).b(&time(3000));
    offers(&mut p, &[2]);
    exchange(&mut p);
    seeds.push(("timeout".to_string(), p));
    // Lost and reordered datagrams, then the senders close.
    let mut p = stream(2);
    offers(&mut p, &[1, 2]);
    p.b(&[7, 1, 7, 3, 4, 2, 255, 6, 0]).b(&[8]).b(&time(5));
    exchange(&mut p);
    p.b(&[11, 1, 0, 11, 1, 1]);
    exchange(&mut p);
    p.b(&[11, 0]);
    exchange(&mut p);
    seeds.push(("loss-and-close".to_string(), p));
    seeds
}

/// Counters files: two slots in use (whole file, form byte 1), and the same
/// after the magic and version (form byte 0).
fn counters_seeds() -> Vec<(String, Vec<u8>)> {
    use conduit_counters::{
        build_file, FileHeader, Slot, KIND_SHM_PUBLICATION, KIND_UDP_SUBSCRIPTION,
    };
    let mut a = Slot::new(
        KIND_SHM_PUBLICATION,
        1,
        10,
        "shm:prices?capacity=1m",
        "ring",
    );
    a.counters.messages.set(100);
    let b = Slot::new(KIND_UDP_SUBSCRIPTION, 3, 20, "udp://0.0.0.0:4000", "socket");
    let file = build_file(&FileHeader::new(4242, 2, 5, "app"), &[a, b]);
    let mut whole = vec![1u8];
    whole.extend_from_slice(&file);
    let mut after = vec![0u8];
    after.extend_from_slice(&file[12..]);
    vec![
        ("two-slots".into(), whole),
        ("two-slots-after-magic".into(), after),
    ]
}

/// The sender's datagrams for `offers` (type, length), captured from a pair
/// identical to the harness's.
fn captured_data(offers: &[(u32, usize)]) -> Vec<Vec<u8>> {
    let mut pair = net::connected_pair();
    let mut buf = vec![0u8; 2 * MTU];
    let mut out = Vec::new();
    for &(t, len) in offers {
        let _ = pair.tx.offer(t, &vec![t as u8; len]);
        while let Some(x) = pair.tx.poll_transmit(pair.now, 1, &mut buf) {
            out.push(buf[..x.len].to_vec());
        }
    }
    // Idle: a heartbeat follows.
    pair.now += Duration::from_millis(60);
    pair.tx.handle_timeout(pair.now);
    while let Some(x) = pair.tx.poll_transmit(pair.now, 1, &mut buf) {
        out.push(buf[..x.len].to_vec());
    }
    out
}

fn receiver_seeds() -> Vec<(String, Program)> {
    let offers = [(1, 8), (2, 32), (3, 700), (4, 2048), (5, 0), (6, 200)];
    let data = captured_data(&offers);
    let mut seeds = Vec::new();
    let mut p = Program::default();
    for d in &data {
        p.raw(d);
    }
    seeds.push(("in-order".to_string(), p));
    let mut p = Program::default();
    for d in data.iter().rev() {
        p.raw(d);
    }
    seeds.push(("reversed".to_string(), p));
    // Every other datagram lost, then time for NAKs, then the rest.
    let mut p = Program::default();
    for d in data.iter().step_by(2) {
        p.raw(d);
    }
    p.b(&[9]).b(&time(2));
    for d in data.iter().skip(1).step_by(2) {
        p.raw(d);
    }
    seeds.push(("gaps".to_string(), p));
    let mut p = Program::default();
    for d in &data {
        p.raw(d).raw(d);
    }
    seeds.push(("duplicates".to_string(), p));
    // The harness's own sender: offers, losses, reordering, time.
    let mut p = Program::default();
    for &(t, len) in &offers {
        p.b(&[4])
            .b(&t.to_le_bytes())
            .b(&(len as u16).to_le_bytes())
            .b(&[t as u8]);
    }
    p.b(&[8, 1, 5, 3, 255, 10]).b(&[9]).b(&time(5)).b(&[10]);
    p.b(&[9]).b(&time(2000)).b(&[10]);
    seeds.push(("live-sender".to_string(), p));
    for (i, d) in data.iter().enumerate().take(8) {
        let mut p = Program::default();
        p.raw(d);
        seeds.push((format!("datagram-{i:02}"), p));
    }
    seeds
}

fn sender_seeds() -> Vec<(String, Program)> {
    use crate::sender::capture_replies;
    let offers = [(7u32, 24usize), (8, 900), (9, 2048), (10, 64)];
    let mut prog = Program::default();
    for &(t, len) in &offers {
        prog.b(&[5])
            .b(&t.to_le_bytes())
            .b(&(len as u16).to_le_bytes())
            .b(&[t as u8]);
    }
    let replies = capture_replies(&prog.0);
    let mut seeds = Vec::new();
    let mut p = prog.clone();
    for r in &replies {
        p.raw(r);
    }
    seeds.push(("replies".to_string(), p));
    for (i, r) in replies.iter().enumerate().take(8) {
        let mut p = prog.clone();
        p.raw(r);
        seeds.push((format!("reply-{i:02}"), p));
    }
    // Offers and the real receiver: deliveries, losses, time.
    let mut p = prog.clone();
    p.b(&[7, 0, 7, 2, 9, 0, 8, 0]).b(&[10]).b(&time(3));
    p.b(&[7, 0, 7, 0, 7, 0]).b(&[10]).b(&time(1500)).b(&[11, 0]);
    seeds.push(("live-receiver".to_string(), p));
    seeds
}

fn ring_seeds() -> Vec<(String, Program)> {
    use conduit_ringbuf::layout;
    let data = layout::data_offset(4, 1) as u32;
    let offer = |p: &mut Program, len: u16| {
        p.b(&[0]).b(&len.to_le_bytes()).b(&[1, 0, 0, 0, 0x11]);
    };
    let poll = |p: &mut Program| {
        p.b(&[6, 0]);
    };
    let mut seeds = Vec::new();
    let mut p = Program::default();
    for len in [0u16, 8, 40, 500, 1024, 16, 1000, 3] {
        offer(&mut p, len);
        poll(&mut p);
    }
    seeds.push(("offers-polls".to_string(), p));
    let mut p = Program::default();
    for _ in 0..40 {
        offer(&mut p, 100);
    }
    poll(&mut p);
    p.b(&[10, 0, 0, 0, 0, 64, 0, 1, 11]);
    seeds.push(("full-ring".to_string(), p));
    // A record, then each of its words scribbled before a poll.
    for (i, (word, value)) in [
        (data / 8 + 1, 100_000u64),
        (data / 8, 77),
        (data / 8, 4096 + 1),
        (0, 0xdead_beef),
        (
            layout::SIGNAL_BLOCK as u32 / 8,
            layout::ATTENTION_MEMBERSHIP,
        ),
        (layout::slot_offset(0) as u32 / 8 + 1, 1 << 40),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = Program::default();
        offer(&mut p, 40);
        // Op 2, value kind 0 (raw u64), at word `word`.
        p.b(&[2])
            .b(&(word as u16).to_le_bytes())
            .b(&[0])
            .b(&value.to_le_bytes());
        poll(&mut p);
        p.b(&[10, 0, 0, 0, 0, 8, 0, 1, 9, 2, 11]);
        poll(&mut p);
        seeds.push((format!("scribble-{i}"), p));
    }
    seeds
}

/// Real URIs: the tests', the README's and the options' documentation's.
const URIS: &[&str] = &[
    "shm:ticks",
    "shm:ticks?capacity=1m",
    "shm://orders?capacity=64k&max_msg=8k&subscribers=4&mode=660&wait=block",
    "shm:a.b_c-d?dir=/tmp/rings&wait=yield",
    "shm:x?capacity=4096&max_msg=2032",
    "udp://127.0.0.1:40000",
    "udp://127.0.0.1:1?driver=socket&mtu=8k&window=1m&max_msg=4m&liveness=300ms&heartbeat=20ms&status=20ms&nak_delay=20us&gap=skip&stream=9&linger=20us&progress=thread&wait=block&gso=off&gro=off&rx_batch=16&rcvbuf=1m&bind=127.0.0.1:0",
    "udp://[::1]:40001?mtu=1408&checksum=off",
    "udp://10.0.0.2:9000?mtu=8972&window=4m&gso=on&gro=on&linger=50us",
    "udp://localhost:40000?window=256k",
    "udp://192.168.1.10:7000?driver=uring&progress=inline&sndbuf=4m",
    "udp://0.0.0.0:0?retransmit=8m&max_msg=16m",
];
