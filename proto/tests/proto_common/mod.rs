//! Shared harness of the protocol tests: a sender and a receiver joined by the simulated
//! network, driven in virtual time, with a checker for exactly-once in-order delivery.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_proto::sim::{LinkConfig, Network};
use conduit_proto::{Config, Event, OfferError, Receiver, Rng, Sender};

pub const TX: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    5000,
);
pub const RX: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    6000,
);

/// Number of seeds: `CONDUIT_SIM_SEEDS` or `default`.
pub fn seeds(default: u64) -> u64 {
    std::env::var("CONDUIT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Aborts the process with a message if the test runs longer than `secs` (a hang guard, not
/// a performance assertion). Disarmed when the returned guard is dropped.
#[must_use = "the watchdog is disarmed when the guard is dropped"]
pub fn watchdog(name: &'static str, secs: u64) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            rx.recv_timeout(Duration::from_secs(secs))
        {
            eprintln!("watchdog: {name} still running after {secs} s; aborting");
            std::process::abort();
        }
    });
    tx
}

/// Runs `f(seed)` for seeds `0..n` on two threads; panics naming every failing seed.
pub fn for_seeds(name: &str, n: u64, f: impl Fn(u64) -> Result<(), String> + Sync) {
    let next = std::sync::atomic::AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= n {
                    break;
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
                let err = match r {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                };
                eprintln!("{name}: seed {seed} FAILED: {err}");
                failures.lock().unwrap().push((seed, err));
            });
        }
    });
    let f = failures.into_inner().unwrap();
    assert!(
        f.is_empty(),
        "{name}: {} failing seeds (rerun one with CONDUIT_SIM_SEED=<seed>): {:?}",
        f.len(),
        f
    );
}

/// Generates messages: `[seq u64][epoch u32][len u32][pattern]`, type id derived from both.
pub struct Gen {
    rng: Rng,
    pub epoch: u32,
    pub next: u64,
    pub total: u64,
    pub large: bool,
    pending: Option<usize>,
    buf: Vec<u8>,
}

pub fn fill(buf: &mut [u8], seq: u64, epoch: u32) {
    let len = buf.len();
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&epoch.to_le_bytes());
    buf[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(epoch);
    for chunk in buf[16..].chunks_mut(8) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

pub fn type_of(seq: u64, epoch: u32) -> u32 {
    (seq as u32) ^ epoch.rotate_left(16)
}

impl Gen {
    pub fn new(seed: u64, epoch: u32, total: u64, large: bool) -> Gen {
        Gen {
            rng: Rng::new(seed ^ 0xABCD),
            epoch,
            next: 0,
            total,
            large,
            pending: None,
            buf: Vec::new(),
        }
    }

    fn size(&mut self) -> usize {
        let r = self.rng.below(1000);
        if r < 700 {
            16 + self.rng.below(49) as usize
        } else if r < 900 {
            65 + self.rng.below(1336) as usize
        } else if r < 990 || !self.large {
            1400 + self.rng.below(6600) as usize
        } else {
            8000 + self.rng.below(62_000) as usize
        }
    }

    /// Offers as many messages as the sender takes (at most `max`).
    pub fn offer(&mut self, tx: &mut Sender, max: usize) -> Result<usize, String> {
        let mut n = 0;
        while self.next < self.total && n < max {
            let len = match self.pending.take() {
                Some(l) => l,
                None => self.size(),
            };
            self.buf.resize(len, 0);
            fill(&mut self.buf, self.next, self.epoch);
            match tx.offer(type_of(self.next, self.epoch), &self.buf) {
                Ok(_) => {
                    self.next += 1;
                    n += 1;
                }
                Err(OfferError::BackPressured) | Err(OfferError::NotConnected) => {
                    self.pending = Some(len);
                    break;
                }
                Err(e) => return Err(format!("offer failed: {e:?}")),
            }
        }
        Ok(n)
    }
}

/// Checks exactly-once, in-order delivery and payload integrity.
#[derive(Default)]
pub struct Checker {
    pub epoch: u32,
    pub next: u64,
    pub delivered: u64,
    /// After a receiver restart the stream may resume at or before `next`.
    pub rejoin: bool,
    pub error: Option<String>,
    scratch: Vec<u8>,
}

impl Checker {
    pub fn check(&mut self, type_id: u32, p: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.check_inner(type_id, p) {
            self.error = Some(e);
        }
    }

    fn check_inner(&mut self, type_id: u32, p: &[u8]) -> Result<(), String> {
        if p.len() < 16 {
            return Err(format!("short message {}", p.len()));
        }
        let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
        let epoch = u32::from_le_bytes(p[8..12].try_into().unwrap());
        let len = u32::from_le_bytes(p[12..16].try_into().unwrap()) as usize;
        if len != p.len() {
            return Err(format!(
                "seq {seq}: length {} but header says {len}",
                p.len()
            ));
        }
        self.scratch.resize(len, 0);
        fill(&mut self.scratch, seq, epoch);
        if self.scratch[..] != p[..] {
            return Err(format!("seq {seq}: payload corrupted"));
        }
        if type_id != type_of(seq, epoch) {
            return Err(format!("seq {seq}: wrong type id"));
        }
        if epoch != self.epoch {
            if epoch < self.epoch || seq != 0 {
                return Err(format!(
                    "epoch {epoch} seq {seq} after epoch {} seq {}",
                    self.epoch, self.next
                ));
            }
            self.epoch = epoch;
            self.next = 0;
        }
        if self.rejoin {
            if seq > self.next {
                return Err(format!("rejoined at seq {seq}, beyond {}", self.next));
            }
            self.rejoin = false;
            self.next = seq;
        }
        if seq != self.next {
            return Err(format!(
                "expected seq {}, got {seq} (epoch {epoch})",
                self.next
            ));
        }
        self.next += 1;
        self.delivered += 1;
        Ok(())
    }
}

/// A sender and a receiver joined by a simulated network.
pub struct Pair {
    pub seed: u64,
    pub start: Instant,
    pub now: Instant,
    pub net: Network,
    pub tx: Sender,
    pub rx: Receiver,
    pub tx_config: Config,
    pub rx_config: Config,
    pub checker: Checker,
    pub tx_events: Vec<Event>,
    pub rx_events: Vec<Event>,
    pub steps: u64,
    /// Most ranges seen in one NAK (several gaps repaired at once).
    pub max_nak_ranges: u16,
    /// More senders on the network, towards the same receiver (see [`Pair::add_sender`]).
    pub others: Vec<Other>,
    buf: Vec<u8>,
}

/// A further sender on the simulated network: its address, the sender, its events.
pub struct Other {
    pub addr: SocketAddr,
    pub tx: Sender,
    pub events: Vec<Event>,
}

impl Pair {
    pub fn new(seed: u64, tx_config: Config, rx_config: Config, link: LinkConfig) -> Pair {
        let start = Instant::now();
        let tx = Sender::new(tx_config.clone(), RX, start, seed).expect("sender config");
        let rx = Receiver::new(rx_config.clone(), start, seed.wrapping_add(77))
            .expect("receiver config");
        Pair {
            seed,
            start,
            now: start,
            net: Network::new(link, seed ^ 0x5151),
            tx,
            rx,
            tx_config,
            rx_config,
            checker: Checker::default(),
            tx_events: Vec::new(),
            rx_events: Vec::new(),
            steps: 0,
            max_nak_ranges: 0,
            others: Vec::new(),
            buf: vec![0; 70_000],
        }
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a sender at `addr` (another process: its own session) towards the receiver;
    /// returns its index in [`Pair::others`]. Its messages are not checked by the checker.
    pub fn add_sender(&mut self, addr: SocketAddr, config: Config, seed: u64) -> usize {
        let tx = Sender::new(config, RX, self.now, seed).expect("sender config");
        self.others.push(Other {
            addr,
            tx,
            events: Vec::new(),
        });
        self.others.len() - 1
    }

    /// Sends what both endpoints want to send.
    pub fn pump(&mut self) -> Result<(), String> {
        for o in &mut self.others {
            while let Some(t) = o.tx.poll_transmit(self.now, 1, &mut self.buf) {
                self.net
                    .send(self.now, o.addr, t.destination, &self.buf[..t.len]);
            }
            while let Some(e) = o.tx.poll_event() {
                o.events.push(e);
            }
        }
        while let Some(t) = self.tx.poll_transmit(self.now, 1, &mut self.buf) {
            if t.len > self.tx_config.mtu {
                return Err(format!("sender emitted {} bytes over mtu", t.len));
            }
            check_data_frame(&self.buf[..t.len])?;
            self.net
                .send(self.now, TX, t.destination, &self.buf[..t.len]);
        }
        // With nothing pending and no timer reached, the receiver must have nothing to send
        // (the UDP subscription skips `poll_transmit` then).
        let mut quiet =
            !self.rx.transmit_pending() && self.rx.poll_timeout().is_none_or(|t| t > self.now);
        while let Some(t) = self.rx.poll_transmit(self.now, 1, &mut self.buf) {
            if std::mem::take(&mut quiet) {
                return Err(format!(
                    "receiver sent frame kind {} while transmit_pending() and poll_timeout() said nothing was due",
                    self.buf[1]
                ));
            }
            if t.len > self.rx_config.mtu {
                return Err(format!("receiver emitted {} bytes over mtu", t.len));
            }
            if self.buf[1] == conduit_proto::frame::FrameKind::NAK.0 && t.len >= 18 {
                let n = u16::from_le_bytes([self.buf[16], self.buf[17]]);
                self.max_nak_ranges = self.max_nak_ranges.max(n);
            }
            self.net
                .send(self.now, RX, t.destination, &self.buf[..t.len]);
        }
        while let Some(e) = self.tx.poll_event() {
            self.tx_events.push(e);
        }
        while let Some(e) = self.rx.poll_event() {
            self.rx_events.push(e);
        }
        Ok(())
    }

    /// Advances virtual time to the next event (never beyond `limit` if given) and handles
    /// everything due. Returns false when nothing is pending at all.
    pub fn advance(&mut self, limit: Option<Instant>) -> bool {
        self.steps += 1;
        let mut next = self.net.next_arrival();
        let others = self.others.iter().filter_map(|o| o.tx.poll_timeout());
        for t in [self.tx.poll_timeout(), self.rx.poll_timeout(), limit]
            .into_iter()
            .flatten()
            .chain(others)
        {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        }
        let Some(next) = next else { return false };
        if next > self.now {
            self.now = next;
        }
        while let Some((from, to, bytes)) = self.net.receive(self.now) {
            if to == RX {
                let checker = &mut self.checker;
                self.rx
                    .handle_datagram(self.now, from, &bytes, |ty, p| checker.check(ty, p));
            } else if to == TX {
                self.tx.handle_datagram(self.now, from, &bytes);
            } else if let Some(o) = self.others.iter_mut().find(|o| o.addr == to) {
                o.tx.handle_datagram(self.now, from, &bytes);
            }
        }
        for o in &mut self.others {
            o.tx.handle_timeout(self.now);
        }
        self.tx.handle_timeout(self.now);
        self.rx.handle_timeout(self.now);
        true
    }

    /// Checks the memory bounds of both sides.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.rx.buffered() > self.rx_config.window as u64 {
            return Err(format!(
                "receiver holds {} bytes beyond window",
                self.rx.buffered()
            ));
        }
        let held = self.tx.position() - self.tx.acked_position();
        if held > self.tx_config.retransmit_buffer as u64 {
            return Err(format!("sender holds {held} bytes beyond its buffer"));
        }
        Ok(())
    }

    /// Restarts the sender (new process: new session id) at the same address.
    pub fn restart_sender(&mut self, seed: u64) {
        self.tx = Sender::new(self.tx_config.clone(), RX, self.now, seed).expect("sender config");
    }

    /// Restarts the receiver (new process) at the same address.
    pub fn restart_receiver(&mut self, seed: u64) {
        self.rx = Receiver::new(self.rx_config.clone(), self.now, seed).expect("receiver config");
        self.checker.rejoin = true;
    }
}

/// Checks a plaintext data frame's records as the receiver walks them: every record well
/// formed and at least one. Other frames (and sealed ones) pass.
pub fn check_data_frame(datagram: &[u8]) -> Result<(), String> {
    if datagram.first() == Some(&conduit_proto::crypto::MAGIC)
        || datagram.get(1) != Some(&conduit_proto::frame::FrameKind::DATA.0)
    {
        return Ok(());
    }
    let records = datagram
        .get(conduit_proto::frame::DATA_HEADER_LEN..)
        .ok_or("data frame shorter than its header")?;
    let mut n = 0;
    for r in conduit_proto::frame::Records::new(records) {
        r.map_err(|e| format!("sender built a malformed record ({e:?}) in {datagram:?}"))?;
        n += 1;
    }
    if n == 0 {
        return Err("sender built a data frame without records".to_string());
    }
    Ok(())
}
