//! Micro-benchmarks of the hot paths: one offer and one poll of a 32-byte
//! message through a `conduit-ringbuf` ring (one process, no contention),
//! the protocol's frame checksum over a full datagram, and
//! `Receiver::handle_datagram` on a prepared data datagram.
//!
//! `cargo bench -p conduit-bench --bench hot_paths`; under `cargo test`
//! (`--bench` not given) each function runs once, as a check that it works.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::{frame, Config, Receiver, Sender};
use conduit_ringbuf::{Publisher, RingConfig, Subscriber};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zerocopy::IntoBytes;

/// A ring directory of its own, removed afterwards.
struct RingDir(std::path::PathBuf);

impl RingDir {
    fn new() -> RingDir {
        let dir = std::env::temp_dir().join(format!("conduit-hot-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create ring dir");
        RingDir(dir)
    }
}

impl Drop for RingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A publisher and a subscriber of the default 1 MiB ring, connected.
fn ring(dir: &RingDir) -> (Publisher, Subscriber) {
    let config = RingConfig {
        dir: Some(dir.0.clone()),
        ..RingConfig::default()
    };
    let mut p = Publisher::create("bench", &config).expect("create ring");
    let mut s = Subscriber::open("bench", Some(&dir.0)).expect("open ring");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(p.is_connected() & s.is_connected()) {
        assert!(Instant::now() < deadline, "subscriber did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }
    (p, s)
}

fn ring_offer_poll(c: &mut Criterion) {
    let dir = RingDir::new();
    let (mut p, mut s) = ring(&dir);
    let msg = [7u8; 32];
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("offer+poll 32 B", |b| {
        b.iter(|| {
            p.offer(1, black_box(&msg)).expect("offer");
            let n = s
                .poll(
                    |t, payload| {
                        let _ = black_box((t, payload));
                    },
                    1,
                )
                .expect("poll");
            assert_eq!(n, 1);
        })
    });
    g.bench_function("offer_with+poll 32 B", |b| {
        b.iter(|| {
            p.offer_with(1, 32, |buf| buf.copy_from_slice(black_box(&msg)))
                .expect("offer_with");
            let n = s
                .poll(
                    |t, payload| {
                        let _ = black_box((t, payload));
                    },
                    1,
                )
                .expect("poll");
            assert_eq!(n, 1);
        })
    });
    g.finish();
}

fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [64usize, 1472, 8192] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{len} B"), |b| {
            b.iter(|| frame::checksum(black_box(&bytes)))
        });
    }
    g.finish();
}

/// A sender and a receiver in memory, handshake done.
struct Link {
    tx: Sender,
    rx: Receiver,
    from: SocketAddr,
    to: SocketAddr,
    now: Instant,
    buf: Vec<u64>,
}

impl Link {
    fn new() -> Link {
        let from: SocketAddr = ([127, 0, 0, 1], 40_001).into();
        let to: SocketAddr = ([127, 0, 0, 1], 40_002).into();
        let now = Instant::now();
        let tx = Sender::new(Config::default(), to, now, 1).expect("sender");
        let rx = Receiver::new(Config::default(), now, 2).expect("receiver");
        let mut link = Link {
            tx,
            rx,
            from,
            to,
            now,
            buf: vec![0; 65_536 / 8],
        };
        for _ in 0..100 {
            if link.tx.is_connected() {
                return link;
            }
            link.exchange();
        }
        panic!("no handshake");
    }

    /// Passes every pending datagram each way.
    fn exchange(&mut self) {
        let buf = bytes_of(&mut self.buf);
        while let Some(t) = self.tx.poll_transmit(self.now, 1, buf) {
            self.rx
                .handle_datagram(self.now, self.from, &buf[..t.len], |_, _| {});
        }
        while let Some(t) = self.rx.poll_transmit(self.now, 1, buf) {
            self.tx.handle_datagram(self.now, self.to, &buf[..t.len]);
        }
        while self.tx.poll_event().is_some() {}
        while self.rx.poll_event().is_some() {}
    }

    /// The datagrams that carry the next 32-byte message (its data
    /// datagram, and whatever the sender had due before it), as 8-byte words.
    fn data_datagrams(&mut self, seq: u64, out: &mut Vec<(Vec<u64>, usize)>) {
        let mut msg = [0u8; 32];
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        self.tx.offer(1, &msg).expect("offer");
        loop {
            let mut words = vec![0u64; 2048 / 8];
            match self.tx.poll_transmit(self.now, 1, bytes_of(&mut words)) {
                Some(t) => out.push((words, t.len)),
                None => break,
            }
        }
    }
}

/// A word buffer as bytes (datagrams are read from 8-byte aligned
/// buffers, as the drivers' are).
fn bytes_of(words: &mut [u64]) -> &mut [u8] {
    words.as_mut_bytes()
}

fn handle_datagram(c: &mut Criterion) {
    const BATCH: u64 = 64;
    let mut g = c.benchmark_group("receiver");
    g.throughput(Throughput::Elements(1));
    g.bench_function("handle_datagram, one 32 B message", |b| {
        let mut link = Link::new();
        let mut seq = 0u64;
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let mut prepared = Vec::new();
                for i in 0..n {
                    link.data_datagrams(seq + i, &mut prepared);
                }
                let mut delivered = 0;
                let t0 = Instant::now();
                for (words, len) in &prepared {
                    let bytes = &words.as_bytes()[..*len];
                    delivered += link.rx.handle_datagram(link.now, link.from, bytes, |t, p| {
                        let _ = black_box((t, p));
                    });
                }
                spent += t0.elapsed();
                assert_eq!(delivered, n as usize, "every prepared message delivered");
                seq += n;
                left -= n;
                // Status back to the sender: its window opens again.
                link.exchange();
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(hot_paths, ring_offer_poll, checksum, handle_datagram);
criterion_main!(hot_paths);
