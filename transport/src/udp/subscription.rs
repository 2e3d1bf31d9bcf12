//! The receiving end of a UDP channel: a protocol [`Receiver`] on the endpoint core, with
//! polls and following the sender.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::proto::{self, Event, GapPolicy, Peer, Sessions};
use crate::uri::ChannelUri;
use crate::{Counters, Error, GoneReason, Received, SessionEvent, Source};

use super::driver::{Driver, Wait};
use super::endpoint::{Core, End, EndStats, Endpoint};
use super::options::{UdpOptions, WaitMode};

/// Empty busy polls between two timer checks (status, NAK, liveness): at
/// a few hundred ns per empty poll, timers are still checked every ~10 µs.
const IDLE_POLLS_PER_TICK: u32 = 32;

/// Messages that arrived beyond a poll's `limit`, copied for the next poll,
/// one queue per session, handed out in turn (a busy session's backlog does
/// not hold a quiet one's messages back). Bounded by one receive batch
/// (`rx_batch` datagrams).
#[derive(Default)]
struct Overflow {
    bytes: Vec<u8>,
    /// Per session: its kept messages.
    queues: Vec<(Peer, VecDeque<Kept>)>,
    /// The queue the next message is taken from (round robin).
    next: usize,
    len: usize,
}

/// A kept message: (type id, position, start in `bytes`, length).
type Kept = (u32, u64, usize, usize);

impl Overflow {
    fn push(&mut self, peer: Peer, type_id: u32, position: u64, payload: &[u8]) {
        if self.len == 0 {
            self.bytes.clear();
            self.queues.clear();
            self.next = 0;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        let msg = (type_id, position, start, payload.len());
        match self.queues.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, q)) => q.push_back(msg),
            None => self.queues.push((peer, VecDeque::from([msg]))),
        }
        self.len += 1;
    }

    /// The next message, sessions taken in turn.
    fn pop(&mut self) -> Option<(Peer, u32, u64, usize, usize)> {
        if self.len == 0 {
            return None;
        }
        let n = self.queues.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let (peer, q) = &mut self.queues[i];
            if let Some((ty, pos, start, len)) = q.pop_front() {
                self.next = (i + 1) % n;
                self.len -= 1;
                return Some((*peer, ty, pos, start, len));
            }
        }
        None
    }
}

/// The message's sender as the application sees it.
#[inline]
fn source(peer: Peer) -> Option<Source> {
    Some(Source::Udp {
        addr: peer.addr,
        session: peer.session_id,
    })
}

/// Says once per process that a receiver could not give its sender a
/// socket of its own (see [`Driver::follow`]).
fn log_follow_failure(e: &std::io::Error) {
    super::logging::log_once!(
        warn,
        "conduit: udp receiver keeps its sender on the bound socket: {e}"
    );
}

/// The protocol's sessions and what the subscription keeps beside them.
pub(crate) struct SubEnd {
    receiver: Sessions,
    overflow: Overflow,
    /// Errors from events, reported once each by `poll`.
    errors: VecDeque<Error>,
    /// Session events for `poll_session_event` (bounded: 64 + 3 × max_sessions).
    session_events: VecDeque<SessionEvent>,
    received: u64,
    idle_polls: u32,
}

impl End for SubEnd {
    const THREAD: &'static str = "conduit-udp-sub";

    #[inline(always)]
    fn poll_transmit(
        &mut self,
        now: Instant,
        max_datagrams: usize,
        buf: &mut [u8],
    ) -> Option<proto::Transmit> {
        self.receiver.poll_transmit(now, max_datagrams, buf)
    }

    fn proto_counters(&self) -> proto::Counters {
        self.receiver.counters()
    }

    fn counters(&self, base: Counters) -> Counters {
        Counters {
            received: self.received,
            naks_sent: self.receiver.counters().naks_sent,
            ..base
        }
    }

    fn thread_period(opts: &UdpOptions) -> Option<Duration> {
        opts.thread_requested.then(|| {
            (opts.proto.status_interval / 4)
                .min(Duration::from_millis(1))
                .max(Duration::from_micros(50))
        })
    }

    fn step(core: &mut Core<Self>, now: Instant) {
        core.tick(now);
    }

    fn close(core: &mut Core<Self>, now: Instant) {
        core.end.receiver.close(now);
        core.tick(now);
    }

    fn stats(&self) -> EndStats {
        let r = &self.receiver;
        // The position of the first live session (one of several).
        let position = r
            .sessions()
            .find(|&(_, live)| live)
            .and_then(|(peer, _)| r.position(peer))
            .unwrap_or(0);
        EndStats {
            messages: self.received,
            position,
            peer_position: position,
            rtt: None,
            sessions: r.live_sessions() as u64,
        }
    }
}

impl Core<SubEnd> {
    /// Timers, status/NAK transmission and events; no socket read.
    fn tick(&mut self, now: Instant) {
        let due = self.end.receiver.poll_timeout().is_some_and(|t| t <= now);
        if due {
            self.end.receiver.handle_timeout(now);
        }
        // Most ticks (after a delivery) have nothing to send.
        if due || self.end.receiver.transmit_pending() {
            self.transmit(now);
        }
        while let Some(e) = self.end.receiver.poll_event() {
            let err = match e {
                Event::PeerGone => Some(Error::PeerGone),
                Event::Closed => Some(Error::Closed),
                Event::VersionMismatch { local, remote } => {
                    Some(Error::VersionMismatch { local, remote })
                }
                Event::UnrecoverableLoss { from, to } => {
                    if self.opts.proto.gap_policy == GapPolicy::Fail {
                        Some(Error::UnrecoverableLoss { from, to })
                    } else {
                        None
                    }
                }
                Event::MtuMismatch { local, remote } => Some(Error::MtuMismatch { local, remote }),
                Event::KeyMismatch => Some(Error::KeyMismatch),
                Event::Connected { .. } | Event::SessionReplaced { .. } => {
                    // Only while one session is held: a followed sender's
                    // datagrams are read first, and with several sessions
                    // the others' would wait.
                    match self.end.receiver.single_peer() {
                        // The sender's datagrams get a socket of their own;
                        // without it everything still arrives through the
                        // bound socket, a little slower.
                        Some(peer) => {
                            if let Err(e) = self.driver.follow(peer) {
                                log_follow_failure(&e);
                            }
                        }
                        None => self.driver.unfollow(),
                    }
                    match e {
                        Event::SessionReplaced { old, new } => {
                            Some(Error::SessionReplaced { old, new })
                        }
                        _ => None,
                    }
                }
                // Sender-side events.
                Event::SessionRefused => None,
                Event::ReceiverJoined { .. } | Event::ReceiverGone { .. } => None,
            };
            if let Some(err) = err {
                if self.end.errors.len() < 16 {
                    self.end.errors.push_back(err);
                }
            }
        }
        let bound = 64 + 3 * self.opts.proto.max_sessions;
        while let Some(e) = self.end.receiver.poll_session_event() {
            let e = match e {
                proto::SessionEvent::Joined { peer } => SessionEvent::Joined {
                    source: Source::Udp {
                        addr: peer.addr,
                        session: peer.session_id,
                    },
                },
                proto::SessionEvent::Gone { peer, reason } => SessionEvent::Gone {
                    source: Source::Udp {
                        addr: peer.addr,
                        session: peer.session_id,
                    },
                    reason: match reason {
                        proto::GoneReason::Closed => GoneReason::Closed,
                        proto::GoneReason::Failed => GoneReason::Failed,
                        _ => GoneReason::TimedOut,
                    },
                },
                proto::SessionEvent::Replaced { addr, old, new } => {
                    SessionEvent::Replaced { addr, old, new }
                }
                _ => continue,
            };
            if self.end.session_events.len() < bound {
                self.end.session_events.push_back(e);
            }
        }
    }

    // Inlined: it is open across a system call (see "The latency path"
    // in the `udp` module docs).
    #[inline(always)]
    fn poll<F: FnMut(Received<'_>)>(
        &mut self,
        handler: &mut F,
        limit: usize,
        wait: Wait,
    ) -> Result<usize, Error> {
        let mut n = 0;
        while n < limit {
            let Some((peer, ty, pos, start, len)) = self.end.overflow.pop() else {
                break;
            };
            handler(
                Received::new(ty, &self.end.overflow.bytes[start..start + len])
                    .with_origin(pos, source(peer)),
            );
            n += 1;
        }
        // A blocking wait ends by the receiver's next timer (a NAK due
        // 50 µs after a gap showed, a status, liveness): the repair of a
        // gap must not wait for data that the gap holds back.
        let wait = match wait {
            Wait::Timeout(t) => Wait::Timeout(self.until_next_timer(t)),
            w => w,
        };
        // The clock is read only when a datagram arrived or the timers are
        // due for a check: an empty busy poll costs one system call.
        let mut now: Option<Instant> = None;
        let before = n;
        if n < limit {
            let Core { end, driver, .. } = self;
            let SubEnd {
                receiver, overflow, ..
            } = end;
            let max = (limit - n).min(1024);
            let r = driver.recv(wait, max, |from, bytes| {
                let t = *now.get_or_insert_with(Instant::now);
                receiver.handle_datagram(t, from, bytes, |peer, pos, ty, p| {
                    if n < limit {
                        handler(Received::new(ty, p).with_origin(pos, source(peer)));
                        n += 1;
                    } else {
                        overflow.push(peer, ty, pos, p);
                    }
                });
            });
            if let Err(e) = r {
                self.tick(Instant::now());
                self.end.received += n as u64;
                return if n > 0 { Ok(n) } else { Err(Error::Io(e)) };
            }
        }
        self.end.received += n as u64;
        let idle = n == before && now.is_none() && matches!(wait, Wait::NoWait);
        if idle {
            self.end.idle_polls += 1;
            if self.end.idle_polls < IDLE_POLLS_PER_TICK {
                return Ok(n);
            }
        }
        self.end.idle_polls = 0;
        // After a blocking wait the time must be read afresh.
        let now = match (now, wait) {
            (Some(t), Wait::NoWait) => t,
            _ => Instant::now(),
        };
        self.tick(now);
        if n == 0 {
            if let Some(e) = self.end.errors.pop_front() {
                return Err(e);
            }
        }
        Ok(n)
    }

    /// `wait`, cut short to when the receiver's next timer is due; the
    /// timers then run at the end of the poll.
    fn until_next_timer(&self, wait: Duration) -> Duration {
        match self.end.receiver.poll_timeout() {
            Some(t) => wait.min(t.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }
}

/// The receiving end of a `udp://ADDR:PORT` channel (bound to that address).
///
/// Messages are delivered in order, exactly once. Unfragmented messages are
/// handed to the poll handler as slices of the driver's receive buffer (no
/// copy); fragmented ones from the reassembly buffer. With
/// `progress=thread`, a background thread keeps status messages, NAKs and
/// liveness going while the application does not poll (data then waits in
/// the socket buffer).
pub(crate) struct UdpSubscription {
    ep: Endpoint<SubEnd>,
    wait: WaitMode,
}

impl std::fmt::Debug for UdpSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSubscription").finish_non_exhaustive()
    }
}

impl UdpSubscription {
    /// Binds the URI's address and opens the subscription.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for bad options, [`Error::Io`] when the address
    /// cannot be bound or the driver cannot be set up.
    pub(crate) fn open(uri: ChannelUri) -> Result<UdpSubscription, Error> {
        let text = uri.as_str().to_owned();
        let mut opts = UdpOptions::from_uri(uri)?;
        if opts.driver.multicast.is_some_and(|m| m.packet) {
            return Err(Error::invalid_uri(
                &text,
                "tx=packet is for a group publication (a subscription only receives)",
            ));
        }
        let (mut bind, wait, mtu) = (opts.addr, opts.wait, opts.proto.mtu);
        if let Some(m) = opts.driver.multicast.as_mut() {
            // A group: join it, and talk to the sender from a unicast port.
            m.join = true;
            bind = super::options::group_subscription_bind(m);
        }
        // One MTU of staging: status messages and NAKs go one at a time.
        let ep = Endpoint::open(opts, bind, None, mtu, |opts, now| {
            let receiver = Sessions::with_os_random(opts.proto.clone(), now)
                .map_err(Error::InvalidArgument)?;
            Ok(SubEnd {
                receiver,
                overflow: Overflow::default(),
                errors: VecDeque::new(),
                session_events: VecDeque::new(),
                received: 0,
                idle_polls: 0,
            })
        })?;
        Ok(UdpSubscription { ep, wait })
    }

    /// Hands up to `limit` messages to `handler`, in order, without blocking.
    /// Messages of a received batch beyond `limit` are kept (copied) for the
    /// next poll.
    ///
    /// # Errors
    /// Once each: [`Error::PeerGone`] (publisher silent past the liveness
    /// timeout), [`Error::Closed`], [`Error::UnrecoverableLoss`] (gap policy
    /// `fail`), [`Error::VersionMismatch`], [`Error::SessionReplaced`] (a
    /// restarted publisher took over), [`Error::MtuMismatch`] (a publication
    /// with a larger `mtu` was rejected); [`Error::Io`] for socket errors.
    // Out of line: a UDP poll is a system call anyway, and inlined it would
    // weigh on the `shm:` path of every `Subscription::poll` caller.
    #[inline(never)]
    pub(crate) fn poll<F: FnMut(Received<'_>)>(
        &mut self,
        mut handler: F,
        limit: usize,
    ) -> Result<usize, Error> {
        self.ep.with(|c| c.poll(&mut handler, limit, Wait::NoWait))
    }

    /// Like [`poll`](Self::poll), waiting up to `timeout` for a first
    /// message: spinning (`wait=spin`, the default) or blocking in the
    /// kernel in steps of at most 1 ms (`wait=block`).
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    pub(crate) fn poll_timeout<F: FnMut(Received<'_>)>(
        &mut self,
        mut handler: F,
        limit: usize,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        let block = self.wait == WaitMode::Block;
        loop {
            let now = Instant::now();
            let wait = if block {
                Wait::Timeout(
                    deadline
                        .saturating_duration_since(now)
                        .min(Duration::from_millis(1)),
                )
            } else {
                Wait::NoWait
            };
            let n = self.ep.with(|c| c.poll(&mut handler, limit, wait))?;
            if n > 0 || Instant::now() >= deadline {
                return Ok(n);
            }
            if !block {
                std::hint::spin_loop();
            }
        }
    }

    /// True while a publisher session is live. Drives progress.
    pub(crate) fn is_connected(&mut self) -> bool {
        self.ep.with(|c| {
            c.tick(Instant::now());
            c.end.receiver.is_connected()
        })
    }

    /// The next session event (see `Subscription::poll_session_event`).
    pub(crate) fn poll_session_event(&mut self) -> Option<SessionEvent> {
        self.ep.with(|c| c.end.session_events.pop_front())
    }

    /// Counters: messages received, NAKs sent, drops by reason, driver.
    pub(crate) fn counters(&self) -> Counters {
        self.ep.counters()
    }

    /// Takes this handle's slot in the counters file.
    pub(crate) fn attach_stats(&mut self, uri: &str) {
        self.ep
            .attach_stats(conduit_counters::KIND_UDP_SUBSCRIPTION, uri);
    }

    /// The bound local address.
    ///
    /// # Errors
    /// The socket's error.
    pub(crate) fn local_addr(&self) -> Result<std::net::SocketAddr, Error> {
        self.ep.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::sync::mpsc;

    use super::*;
    use zerocopy::FromBytes;

    use crate::proto::frame::{FrameKind, Header};
    use crate::proto::{Config, Sender, SenderState};

    /// A blocking poll ends when the receiver's NAK timer is due: after a
    /// gap, the publisher sends nothing more (here: nothing at all) until
    /// the gap is repaired, so a wait for data alone would sit on the NAK
    /// for its whole length (it did: up to a 1 ms step through
    /// `poll_timeout`, and for any length through the core's blocking poll).
    #[test]
    fn blocking_poll_after_a_gap_wakes_for_the_nak() {
        let mut sub = UdpSubscription::open(
            ChannelUri::parse("udp://127.0.0.1:0?driver=socket&wait=block&nak_delay=1ms").unwrap(),
        )
        .unwrap();
        let to = sub.local_addr().unwrap();
        // The publisher: conduit's protocol sender on a plain socket.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let mut sender = Sender::new(Config::default(), to, Instant::now(), 7).unwrap();
        let (mut buf, mut rbuf) = (vec![0u8; 2048], vec![0u8; 2048]);
        let end = Instant::now() + Duration::from_secs(10);
        while sender.state() != SenderState::Connected {
            assert!(Instant::now() < end, "no handshake within 10 s");
            while let Some(t) = sender.poll_transmit(Instant::now(), 1, &mut buf) {
                sock.send_to(&buf[..t.len], to).unwrap();
            }
            sub.poll(|_| {}, 16).unwrap();
            while let Ok((n, from)) = sock.recv_from(&mut rbuf) {
                sender.handle_datagram(Instant::now(), from, &rbuf[..n]);
            }
        }
        // Three messages, one data frame each; the second is lost.
        let mut datagrams = Vec::new();
        for i in 0..3u8 {
            sender.offer(1, &[i; 16]).unwrap();
            while let Some(t) = sender.poll_transmit(Instant::now(), 1, &mut buf) {
                let (h, _) = Header::ref_from_prefix(&buf[..t.len]).unwrap();
                if h.kind == FrameKind::DATA {
                    datagrams.push(buf[..t.len].to_vec());
                }
            }
        }
        assert_eq!(datagrams.len(), 3);
        let before = sub.counters().datagrams_received;
        sock.send_to(&datagrams[0], to).unwrap();
        sock.send_to(&datagrams[2], to).unwrap();
        let mut got = Vec::new();
        while sub.counters().datagrams_received < before + 2 {
            assert!(Instant::now() < end, "data not received within 10 s");
            sub.poll(|m| got.push(m.payload()[0]), 16).unwrap();
        }
        assert_eq!(got, [0], "only the message before the gap");
        let naks = sub.ep.with(|c| c.end.receiver.counters().naks_sent);
        // One blocking poll for up to 60 s, from another thread; nothing
        // arrives in that time unless the NAK goes out. A watchdog turns a
        // poll that sits on the due NAK into a failure.
        let (done_tx, done_rx) = mpsc::channel();
        let poller = std::thread::spawn(move || {
            let r = sub.ep.with(|c| {
                c.poll(
                    &mut |_: Received<'_>| {},
                    16,
                    Wait::Timeout(Duration::from_secs(60)),
                )
            });
            let _ = done_tx.send(());
            (sub, r)
        });
        if done_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            panic!("a blocking poll sat on a due NAK for 20 s");
        }
        let (sub, r) = poller.join().unwrap();
        assert_eq!(r.unwrap(), 0);
        assert!(
            sub.ep.with_ref(|c| c.end.receiver.counters().naks_sent) > naks,
            "the poll returned without sending the NAK"
        );
    }
}
