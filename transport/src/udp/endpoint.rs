//! One UDP endpoint core for both channel ends: a protocol end (a [`Sender`] or a
//! [`Receiver`] with the state its channel type keeps), the driver, the send staging and the
//! transmit loop, run inline in the application's calls or also by a background thread.
//!
//! The protocol builds the datagrams and their GSO batches (`poll_transmit`, see
//! [`crate::proto`]); this layer only hands them to the driver. What differs between the ends
//! (offers and claims; polls and following a sender) lives in `publication.rs` and
//! `subscription.rs`, as methods of `Core<PubEnd>` and `Core<SubEnd>`.
//!
//! [`Sender`]: crate::proto::Sender
//! [`Receiver`]: crate::proto::Receiver

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::proto;
use crate::stats::{self, StatsSlot};
use crate::{Counters, Error};

use super::driver::{open_driver, AnyDriver, Driver, Transmit, MAX_UDP_PAYLOAD};
use super::options::UdpOptions;

/// Most datagrams sent per transmit call, so a call's work stays bounded.
const MAX_DATAGRAMS_PER_TRANSMIT: usize = 512;

/// The protocol end of an endpoint, with the state its channel type keeps beside it.
pub(crate) trait End: Send + Sized + 'static {
    /// Name of the background progress thread.
    const THREAD: &'static str;

    /// The next datagrams to send: up to `max_datagrams` of one size, in `buf` (see
    /// `Sender::poll_transmit`).
    fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
    ) -> Option<proto::Transmit>;

    /// The protocol's counters (a subscription's summed over its sessions).
    fn proto_counters(&self) -> proto::Counters;

    /// The end's own counters on top of the `base` the core filled in.
    fn counters(&self, base: Counters) -> Counters;

    /// How often the background thread steps, or `None` for no thread.
    fn thread_period(opts: &UdpOptions) -> Option<Duration>;

    /// One step of the background thread.
    fn step(core: &mut Core<Self>, now: Instant);

    /// Closes the end when its handle is dropped (the thread has stopped).
    fn close(core: &mut Core<Self>, now: Instant);

    /// What the counters file shows beside the protocol's counters.
    fn stats(&self) -> EndStats;
}

/// What an end adds to its protocol counters in the counters file.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EndStats {
    /// Messages sent or handed to the application.
    pub(crate) messages: u64,
    /// Publication: its stream position; subscription: its position.
    pub(crate) position: u64,
    /// Publication: the acknowledged position; subscription: the highest
    /// position it knows the publisher reached.
    pub(crate) peer_position: u64,
    /// Smoothed RTT, once measured.
    pub(crate) rtt: Option<Duration>,
    /// Subscription: live sessions; publication: receivers known.
    pub(crate) sessions: u64,
}

/// Least time between two copies of the counters into the counters file.
const STATS_INTERVAL: Duration = Duration::from_millis(1);

/// A protocol end with its driver and send staging.
pub(crate) struct Core<E> {
    /// The protocol end.
    pub(crate) end: E,
    pub(crate) driver: AnyDriver,
    pub(crate) opts: UdpOptions,
    /// Staging for outgoing datagrams.
    pub(crate) txbuf: Vec<u8>,
    /// (destination, offset, len, segment size) of the batches staged in `txbuf`.
    staged: Vec<(SocketAddr, usize, usize, usize)>,
    /// Datagrams the driver did not take (lost like on the wire; the protocol repairs them).
    send_errors: u64,
    /// The handle's counters in the counters file, and when they are copied next.
    stats: stats::Writer,
    stats_next: Instant,
}

impl<E: End> Core<E> {
    /// Drains `poll_transmit` into the staging buffer (GSO batches, as many as fit) and sends
    /// them with one driver call (`sendmmsg`), again until the end has nothing more to send or
    /// [`MAX_DATAGRAMS_PER_TRANSMIT`] went out.
    // Inlined: it is open across a system call (see "The latency path" in the `udp` module
    // docs).
    #[inline(always)]
    pub(crate) fn transmit(&mut self, now: Instant) {
        if now >= self.stats_next {
            self.stats_next = now + STATS_INTERVAL;
            self.publish_stats(now);
        }
        let mtu = self.opts.proto.mtu;
        let max_segs = self.driver.max_segments().max(1);
        let mut total = 0;
        loop {
            self.staged.clear();
            let mut off = 0;
            // Whether the end has nothing more to send (or the staging filled up and it
            // must be asked again).
            let mut drained = false;
            while self.txbuf.len() - off >= mtu {
                let end = (off + MAX_UDP_PAYLOAD).min(self.txbuf.len());
                let Some(t) = self
                    .end
                    .poll_transmit(now, max_segs, &mut self.txbuf[off..end])
                else {
                    drained = true;
                    break;
                };
                self.staged
                    .push((t.destination, off, t.len, t.segment_size));
                off += t.len;
                total += t.datagrams();
            }
            if self.staged.is_empty() {
                return;
            }
            // The latency path: one batch, no list to build.
            let single;
            let built: Vec<Transmit<'_>>;
            let batch: &[Transmit<'_>] = if let [(dest, start, len, seg)] = self.staged[..] {
                single = [Transmit {
                    dest,
                    contents: &self.txbuf[start..start + len],
                    segment_size: seg,
                }];
                &single
            } else {
                built = self
                    .staged
                    .iter()
                    .map(|&(dest, start, len, seg)| Transmit {
                        dest,
                        contents: &self.txbuf[start..start + len],
                        segment_size: seg,
                    })
                    .collect();
                &built
            };
            let mut sent = 0;
            while sent < batch.len() {
                match self.driver.send(&batch[sent..]) {
                    Ok(0) => break,
                    Ok(k) => sent += k,
                    // The datagrams are lost like on the wire; the protocol repairs them
                    // (counted below).
                    Err(_) => break,
                }
            }
            let lost: usize = batch[sent..].iter().map(Transmit::segments).sum();
            self.send_errors += lost as u64;
            if drained || total >= MAX_DATAGRAMS_PER_TRANSMIT {
                return;
            }
        }
    }

    /// Sends the one datagram the end built in `txbuf[..len]` to `dest` (the latency path,
    /// without the transmit loop); a datagram that cannot go is lost like on the wire and
    /// counted.
    // Inlined: it is open across a system call (see "The latency path" in the `udp` module
    // docs).
    #[inline(always)]
    pub(crate) fn send_one(&mut self, dest: SocketAddr, len: usize) {
        let tx = [Transmit {
            dest,
            contents: &self.txbuf[..len],
            segment_size: len,
        }];
        if !matches!(self.driver.send(&tx), Ok(1)) {
            self.send_errors += 1;
        }
    }

    /// Copies the counters into the handle's slot of the counters file.
    #[cold]
    #[inline(never)]
    fn publish_stats(&self, now: Instant) {
        let (w, c, e) = (self.stats, self.end.proto_counters(), self.end.stats());
        let unix = stats::unix_ns();
        let oversized = self.driver.oversized();
        w.traffic(e.messages, c.bytes);
        w.set(stats::BACK_PRESSURE, c.back_pressured);
        w.set(stats::NOT_CONNECTED, c.not_connected);
        w.set(stats::POSITION, e.position);
        w.set(stats::PEER_POSITION, e.peer_position);
        w.set(stats::NAKS_SENT, c.naks_sent);
        w.set(stats::NAKS_RECEIVED, c.naks_received);
        w.set(stats::RETRANSMITS, c.retransmitted);
        w.set(stats::RETRANSMITTED_BYTES, c.retransmitted_bytes);
        w.set(stats::RTT_NS, e.rtt.map_or(0, |d| d.as_nanos() as u64));
        w.set(stats::SESSIONS, e.sessions);
        let places = conduit_counters::DROP_SLOTS.min(proto::DROP_REASONS);
        for (i, d) in c.drops.iter().take(places).enumerate() {
            let cut = if i == proto::DropReason::Oversized as usize {
                oversized
            } else {
                0
            };
            w.set(stats::DROPS + i, d + cut);
        }
        w.set(stats::DROPS_TOTAL, c.dropped_total() + oversized);
        w.set(stats::GAPS_DETECTED, c.gaps_detected);
        w.set(stats::GAPS_REPAIRED, c.gaps_repaired);
        w.set(stats::GAPS_UNRECOVERABLE, c.gaps_unrecoverable);
        w.set(
            stats::LAST_GAP,
            stats::instant_unix_ns(c.last_gap, now, unix),
        );
        let lost = stats::instant_unix_ns(c.last_unrecoverable, now, unix);
        w.set(stats::LAST_UNRECOVERABLE, lost);
        w.set(stats::DATAGRAMS_SENT, c.datagrams_sent);
        w.set(stats::DATAGRAMS_RECEIVED, c.datagrams_received);
        w.set(stats::HEARTBEAT, unix);
    }

    /// The counters both ends have, then the end's own.
    fn counters(&self) -> Counters {
        let c = self.end.proto_counters();
        let mut by: Vec<(&'static str, u64)> = c.drops_by_reason().collect();
        // Cut by the kernel, seen by the driver only.
        let oversized = self.driver.oversized();
        by[proto::DropReason::Oversized as usize].1 += oversized;
        by.push(("send_failed", self.send_errors));
        self.end.counters(Counters {
            dropped: c.dropped_total() + oversized,
            datagrams_sent: c.datagrams_sent,
            datagrams_received: c.datagrams_received,
            drops_by_reason: by,
            driver: Some(self.driver.kind().name()),
            ..Counters::default()
        })
    }
}

/// A channel end: its core, driven only by the application's calls, or also by a background
/// thread every period (`progress=thread`).
pub(crate) struct Endpoint<E: End> {
    progress: Progress<Core<E>>,
    /// The handle's slot in the counters file, freed after the core closed.
    stats: StatsSlot,
}

/// Where the core lives.
enum Progress<C> {
    /// Driven only by the application's calls.
    Local(Box<C>),
    /// Also driven by a background thread, which steps only when it finds the core unlocked
    /// (`try_lock`): it skips its steps while the application has the core, in a call or
    /// for as long as a [`Hold`] keeps it locked. The lock does not poison: a panic while
    /// holding it leaves the core usable, its state being only protocol bookkeeping,
    /// validated on every use.
    Shared {
        core: Arc<Mutex<C>>,
        /// Set while a [`Hold`] lives (it borrows the endpoint, so nothing else runs then):
        /// found set by any other call, the hold was leaked, with the core still locked.
        held: bool,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
}

/// A hold leaked with `mem::forget` leaves the core locked for good: the endpoint's next
/// use panics with this message rather than wait forever.
const LEAKED: &str =
    "conduit: a UDP claim was leaked (mem::forget); its publication cannot be used";

#[cold]
#[inline(never)]
fn leaked() -> ! {
    panic!("{LEAKED}")
}

impl<E: End> Endpoint<E> {
    /// Opens the driver bound to `bind` (connected to `connect`, if given), builds the end
    /// with `end`, stages `tx_bytes` for sending and starts the background thread if the end
    /// wants one.
    ///
    /// # Errors
    /// [`Error::Io`] for socket or io_uring setup failures and a thread that cannot be
    /// spawned; `end`'s errors.
    pub(crate) fn open(
        opts: UdpOptions,
        bind: SocketAddr,
        connect: Option<SocketAddr>,
        tx_bytes: usize,
        end: impl FnOnce(&UdpOptions, Instant) -> Result<E, Error>,
    ) -> Result<Self, Error> {
        let mut driver = open_driver(bind, &opts.driver).map_err(Error::Io)?;
        if let Some(peer) = connect {
            driver.connect(peer).map_err(Error::Io)?;
        }
        let end = end(&opts, Instant::now())?;
        let slots = tx_bytes / opts.proto.mtu.max(1);
        let core = Box::new(Core {
            end,
            driver,
            txbuf: vec![0u8; tx_bytes],
            staged: Vec::with_capacity(slots),
            send_errors: 0,
            stats: stats::Writer::nowhere(),
            stats_next: Instant::now(),
            opts,
        });
        let progress = match E::thread_period(&core.opts) {
            None => Progress::Local(core),
            Some(period) => {
                let core = Arc::new(Mutex::new(*core));
                let stop = Arc::new(AtomicBool::new(false));
                let (c, s) = (core.clone(), stop.clone());
                let thread = std::thread::Builder::new()
                    .name(E::THREAD.into())
                    .spawn(move || {
                        // Relaxed: a stop request carries no data.
                        while !s.load(Ordering::Relaxed) {
                            // Locked, the core is the application's: it makes progress
                            // itself, or a claim must find its room as it left it.
                            if let Some(mut core) = c.try_lock() {
                                E::step(&mut core, Instant::now());
                            }
                            std::thread::sleep(period);
                        }
                    })
                    .map_err(Error::Io)?;
                Progress::Shared {
                    core,
                    held: false,
                    stop,
                    thread: Some(thread),
                }
            }
        };
        Ok(Endpoint {
            progress,
            stats: StatsSlot::nowhere(),
        })
    }

    /// Runs `f` on the core (locking it if a thread shares it).
    #[inline(always)]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut Core<E>) -> R) -> R {
        match &mut self.progress {
            Progress::Local(c) => f(c),
            Progress::Shared { held: true, .. } => leaked(),
            Progress::Shared { core, .. } => f(&mut core.lock()),
        }
    }

    /// Runs `f` on the core, read-only.
    pub(crate) fn with_ref<R>(&self, f: impl FnOnce(&Core<E>) -> R) -> R {
        match &self.progress {
            Progress::Local(c) => f(c),
            Progress::Shared { held: true, .. } => leaked(),
            Progress::Shared { core, .. } => f(&core.lock()),
        }
    }

    /// The core, held exclusively until the [`Hold`] is dropped: with a background thread,
    /// the core stays locked while the hold lives (one lock and one unlock, as a call of
    /// [`with`](Self::with); the thread skips its steps meanwhile). Leaking the hold
    /// (`mem::forget`) leaves the core locked: the endpoint's next use panics, and its drop
    /// frees the core without closing it.
    #[inline(always)]
    pub(crate) fn hold(&mut self) -> Hold<'_, Core<E>> {
        match &mut self.progress {
            Progress::Local(c) => Hold::Local(c),
            Progress::Shared { held: true, .. } => leaked(),
            Progress::Shared { core, held, .. } => {
                let core = core.lock();
                *held = true;
                Hold::Locked { core, held }
            }
        }
    }

    /// Counters: the protocol's, the driver's and the end's own (also
    /// copied into the counters file).
    pub(crate) fn counters(&self) -> Counters {
        self.with_ref(|c| {
            c.publish_stats(Instant::now());
            c.counters()
        })
    }

    /// Takes a slot of `kind` for `uri` in the counters file, with the
    /// driver in use.
    pub(crate) fn attach_stats(&mut self, kind: u32, uri: &str) {
        let driver = self.with_ref(|c| c.driver.kind().name());
        self.stats = StatsSlot::open(kind, uri, driver);
        let w = self.stats.writer();
        self.with(|c| {
            c.stats = w;
            c.publish_stats(Instant::now());
        });
    }

    /// The local socket address.
    ///
    /// # Errors
    /// The socket's error.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.with_ref(|c| c.driver.local_addr()).map_err(Error::Io)
    }

    /// Stops and joins the background thread, if any; the core stays.
    fn stop_thread(&mut self) {
        if let Progress::Shared { stop, thread, .. } = &mut self.progress {
            // Relaxed: see the load in the thread.
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl<E: End> Drop for Endpoint<E> {
    fn drop(&mut self) {
        self.stop_thread();
        let core = match &mut self.progress {
            Progress::Local(c) => Some(&mut **c),
            // A core whose hold was leaked is left as the claim left it: it is freed (its
            // socket closed) unclosed.
            Progress::Shared { held: true, .. } => None,
            // The thread is joined: the endpoint has the only reference.
            Progress::Shared { core, .. } => Arc::get_mut(core).map(Mutex::get_mut),
        };
        if let Some(c) = core {
            E::close(c, Instant::now());
            c.publish_stats(Instant::now());
        }
    }
}

/// A core held exclusively (see [`Endpoint::hold`]).
pub(crate) enum Hold<'a, C> {
    /// The core of an endpoint without a thread.
    Local(&'a mut C),
    /// A core shared with a thread, locked until the hold is dropped (the guard is `Send`,
    /// so a claim is).
    Locked {
        core: MutexGuard<'a, C>,
        /// The endpoint's `held`, cleared on drop.
        held: &'a mut bool,
    },
}

impl<C> Deref for Hold<'_, C> {
    type Target = C;
    #[inline(always)]
    fn deref(&self) -> &C {
        match self {
            Hold::Local(c) => c,
            Hold::Locked { core, .. } => core,
        }
    }
}

impl<C> DerefMut for Hold<'_, C> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut C {
        match self {
            Hold::Local(c) => c,
            Hold::Locked { core, .. } => core,
        }
    }
}

impl<C> Drop for Hold<'_, C> {
    #[inline(always)]
    fn drop(&mut self) {
        // The guard unlocks the core right after.
        if let Hold::Locked { held, .. } = self {
            **held = false;
        }
    }
}

impl<C> std::fmt::Debug for Hold<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").finish_non_exhaustive()
    }
}
