//! [`Publication`] and [`Subscription`]: one API over every transport.

use crate::shm::{ShmPublication, ShmSubscription};
use crate::uri::{ChannelUri, Scheme};
use crate::{Error, Message, Received};
use conduit_ringbuf as ring;
use std::marker::PhantomData;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, FromZeros, KnownLayout};

/// Counters of one channel handle. Drops are counted per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages accepted by `offer`/`send`/claims.
    pub sent: u64,
    /// Messages handed to a poll handler.
    pub received: u64,
    /// Datagrams sent again after a NAK (UDP).
    pub retransmitted: u64,
    /// NAKs sent (UDP subscriptions).
    pub naks_sent: u64,
    /// NAKs received (UDP publications).
    pub naks_received: u64,
    /// Datagrams or records dropped, all reasons together.
    pub dropped: u64,
    /// Datagrams handed to the socket, data and control, retransmissions
    /// included (UDP; 0 for `shm:`). Many messages share one datagram.
    pub datagrams_sent: u64,
    /// Datagrams taken off the wire, valid or not (UDP; 0 for `shm:`).
    pub datagrams_received: u64,
    /// Drops by reason (e.g. `"truncated"`, `"wrong_session"`).
    pub drops_by_reason: Vec<(&'static str, u64)>,
    /// The I/O driver in use (`"uring"`, `"socket"`), or `None` for `shm:`.
    pub driver: Option<&'static str>,
    /// Receiver events a group publication dropped (the oldest) because the application did
    /// not poll them ([`Publication::poll_receiver_event`]).
    pub receiver_events_dropped: u64,
}

// One per handle, never moved on a hot path: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum PubInner {
    Shm(ShmPublication),
    Udp(crate::udp::UdpPublication),
}

#[allow(clippy::large_enum_variant)]
enum SubInner {
    Shm(ShmSubscription),
    Udp(crate::udp::UdpSubscription),
}

/// The sending end of a channel.
///
/// Opened by URI: `shm:NAME` for a shared-memory ring on this host,
/// `udp://HOST:PORT` for a reliable stream to another host (options:
/// [`crate::uri`]). One publication per channel.
///
/// **Threads:** a `Publication` is `Send` but not `Sync`: move it to the
/// thread that sends, or guard it with a mutex; its methods take `&mut self`.
/// Its `Debug` output shows the URI and, for `udp:`, the I/O driver.
///
/// ```
/// # fn main() -> Result<(), conduit::Error> {
/// # let name = format!("doc-publication-{}", std::process::id());
/// let publ = conduit::Publication::open(&format!("shm:{name}?capacity=64k"))?;
/// let shown = format!("{publ:?}");
/// assert!(shown.contains(&name), "{shown}");
/// std::thread::spawn(move || drop(publ)).join().unwrap(); // Send
/// # Ok(()) }
/// ```
pub struct Publication {
    inner: PubInner,
    uri: Box<str>,
}

/// The receiving end of a channel.
///
/// Each subscription receives every message, in order, from the point it
/// joined. It may be opened before its publication exists.
///
/// **Threads:** a `Subscription` is `Send` but not `Sync`, like
/// [`Publication`]. Its `Debug` output shows the URI and, for `udp:`, the
/// I/O driver.
///
/// ```
/// # fn main() -> Result<(), conduit::Error> {
/// # let name = format!("doc-subscription-{}", std::process::id());
/// let sub = conduit::Subscription::open(&format!("shm:{name}"))?;
/// assert!(format!("{sub:?}").contains(&name));
/// # Ok(()) }
/// ```
pub struct Subscription {
    inner: SubInner,
    uri: Box<str>,
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Publication");
        d.field("uri", &&*self.uri);
        if let Some(driver) = self.counters().driver {
            d.field("driver", &driver);
        }
        d.finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Subscription");
        d.field("uri", &&*self.uri);
        if let Some(driver) = self.counters().driver {
            d.field("driver", &driver);
        }
        d.finish_non_exhaustive()
    }
}

impl Publication {
    /// Opens the publication of the channel at `uri`.
    ///
    /// Options and their limits are listed in [`crate::uri`]. Opening does
    /// no network I/O: a `udp:` publication connects in its later calls.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let name = format!("doc-pub-open-{}", std::process::id());
    /// let publ = conduit::Publication::open(&format!("shm:{name}?capacity=64k&max_msg=1k"))?;
    /// assert_eq!(publ.max_message_len(), 1024);
    /// // One live publication per name.
    /// let again = conduit::Publication::open(&format!("shm:{name}"));
    /// assert!(matches!(again, Err(conduit::Error::PublisherAlive { .. })));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a malformed URI, an unknown option or one
    /// out of range; for `shm:`, [`Error::PublisherAlive`] when a live
    /// publisher already owns the name, [`Error::ForeignOwner`] or
    /// [`Error::NotAChannel`] when another uid's file or a file that is not a
    /// ring holds it, and [`Error::Io`] when the ring file cannot be created.
    pub fn open(uri: &str) -> Result<Publication, Error> {
        let mut parsed = ChannelUri::parse(uri)?;
        let inner = match parsed.scheme.clone() {
            Scheme::Shm { name } => {
                let opts = crate::shm::options(name, &mut parsed)?;
                parsed.finish()?;
                PubInner::Shm(ShmPublication::open(opts)?)
            }
            Scheme::Udp { .. } => {
                let mut p = crate::udp::UdpPublication::open(parsed)?;
                p.attach_stats(uri);
                PubInner::Udp(p)
            }
        };
        Ok(Publication {
            inner,
            uri: uri.into(),
        })
    }

    /// Reserves `len` bytes for a message with `type_id`, lets `fill` write
    /// them in place and publishes the message: [`try_claim`](Self::try_claim)
    /// and [`Claim::commit`] in one call, with no claim to hold. `fill` writes
    /// in place: ring memory over `shm:`, the UDP sender's log (where the
    /// datagram is built from) over `udp:`, for messages up to one record
    /// (longer UDP messages go through a scratch buffer); its bytes are not
    /// zeroed first.
    /// Returns the stream position after the message.
    ///
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-offer-with-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer_with(7, 16, |buf| {
    ///     buf[..8].copy_from_slice(&1u64.to_le_bytes());
    ///     buf[8..].copy_from_slice(&2u64.to_le_bytes());
    /// })?;
    /// sub.poll(|m| assert_eq!(m.payload().len(), 16), 1)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Publication::offer`]; `fill` is not called then.
    #[inline(always)]
    pub fn offer_with<F: FnOnce(&mut [u8])>(
        &mut self,
        type_id: u32,
        len: usize,
        fill: F,
    ) -> Result<u64, Error> {
        match &mut self.inner {
            PubInner::Shm(p) => p.offer_with(type_id, len, fill),
            PubInner::Udp(p) => p.offer_with(type_id, len, fill),
        }
    }

    /// Copies `payload` into a new message with `type_id`.
    ///
    /// Returns the stream position after the message. Never blocks: a full
    /// ring or window is [`Error::BackPressured`], and the message was not
    /// taken (retry it later, after the subscribers caught up).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-offer-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// let after = publ.offer(1, b"hello")?;
    /// assert!(after > 0);
    /// sub.poll(|m| assert_eq!(m.payload(), b"hello"), 1)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::BackPressured`] (retry: nothing lost), [`Error::NotConnected`]
    /// (no subscriber yet), [`Error::MessageTooLarge`], [`Error::Corrupt`].
    #[inline]
    pub fn offer(&mut self, type_id: u32, payload: &[u8]) -> Result<u64, Error> {
        match &mut self.inner {
            PubInner::Shm(p) => p.offer(type_id, payload),
            PubInner::Udp(p) => p.offer(type_id, payload),
        }
    }

    /// Sends a typed message (a copy of its bytes).
    ///
    /// A type aligned above 8 does not compile here (see [`Message`]).
    ///
    /// ```
    /// use conduit::Message;
    /// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    ///
    /// #[repr(C)]
    /// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// struct Tick { seq: u64, price: i64 }
    /// impl Message for Tick { const TYPE_ID: u32 = 7; }
    ///
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-send-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.send(&Tick { seq: 1, price: 100 })?;
    /// sub.poll(|m| assert_eq!(m.get::<Tick>().unwrap().price, 100), 1)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Publication::offer`].
    #[inline]
    pub fn send<T: Message>(&mut self, msg: &T) -> Result<u64, Error> {
        crate::message::assert_alignment::<T>();
        self.offer(T::TYPE_ID, msg.as_bytes())
    }

    /// Reserves `len` bytes in place for a message with `type_id`: in ring
    /// memory over `shm:`, in the UDP sender's log (where its datagram is
    /// built from) over `udp:`. Fill them, then [`Claim::commit`]; dropping
    /// the claim aborts it. Over `udp:` a claim is at most one record (a
    /// little under the `mtu`) and holds the channel's core until it is
    /// committed or dropped (a `progress=thread` thread waits meanwhile).
    ///
    /// When the message is filled at once, [`offer_with`](Self::offer_with)
    /// does the same in one call and compiles to tighter code: moving a
    /// `Claim` out of its `Result` can cost a stalled reload in a hot loop.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-try-claim-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// let mut claim = publ.try_claim(3, 4)?;
    /// claim.copy_from_slice(b"abcd");
    /// claim.commit();
    /// sub.poll(|m| assert_eq!(m.payload(), b"abcd"), 1)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Publication::offer`].
    #[inline(always)]
    pub fn try_claim(&mut self, type_id: u32, len: usize) -> Result<Claim<'_>, Error> {
        match &mut self.inner {
            PubInner::Shm(p) => Ok(Claim {
                inner: ClaimInner::Shm(p.try_claim(type_id, len)?),
            }),
            PubInner::Udp(p) => Ok(Claim {
                inner: ClaimInner::Udp(p.try_claim(type_id, len)?),
            }),
        }
    }

    /// Reserves a zeroed `T` in place; fill it and [`TypedClaim::commit`].
    /// A type aligned above 8 does not compile here (see [`Message`]).
    ///
    /// ```
    /// use conduit::Message;
    /// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    ///
    /// #[repr(C)]
    /// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// struct Quote { bid: i64, ask: i64 }
    /// impl Message for Quote { const TYPE_ID: u32 = 8; }
    ///
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-claim-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// let mut q = publ.claim::<Quote>()?;
    /// q.bid = 99;
    /// q.ask = 101;
    /// q.commit();
    /// sub.poll(|m| assert_eq!(m.get::<Quote>().unwrap().ask, 101), 1)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Publication::offer`].
    pub fn claim<T: Message>(&mut self) -> Result<TypedClaim<'_, T>, Error> {
        crate::message::assert_alignment::<T>();
        let mut claim = self.try_claim(T::TYPE_ID, size_of::<T>())?;
        let bytes = claim.as_mut_slice();
        bytes.fill(0);
        if T::mut_from_prefix(bytes).is_err() {
            claim.abort();
            return Err(Error::InvalidArgument(format!(
                "message type {} needs alignment {} (at most 8 is supported)",
                T::TYPE_ID,
                align_of::<T>()
            )));
        }
        Ok(TypedClaim {
            claim,
            _t: PhantomData,
        })
    }

    /// True while at least one subscriber is attached (shm) or the peer is
    /// live (udp). Also drives the channel's timers (and, for `shm:`, admits
    /// joining subscribers).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-pub-connected-{}", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// assert!(!publ.is_connected());
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// while !publ.is_connected() {
    ///     sub.poll(|_| {}, 1)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_connected(&mut self) -> bool {
        match &mut self.inner {
            PubInner::Shm(p) => p.is_connected(),
            PubInner::Udp(p) => p.is_connected(),
        }
    }

    /// Subscribers attached now: for `shm:`, live subscriptions holding a
    /// slot (an evicted one still counts until it leaves; dead ones are
    /// reaped first); for `udp:` to one host, 1 while the subscriber's
    /// session is connected, else 0; for `udp:` to a multicast group, the
    /// receivers in the publication's set (see [`ReceiverEvent`](crate::ReceiverEvent)).
    /// Also drives the channel's timers.
    ///
    /// ```no_run
    /// # use conduit::Publication;
    /// let mut p = Publication::open("shm:quotes")?;
    /// println!("{} subscribers", p.subscriber_count());
    /// # Ok::<(), conduit::Error>(())
    /// ```
    pub fn subscriber_count(&mut self) -> usize {
        match &mut self.inner {
            PubInner::Shm(p) => p.ring.subscriber_count(),
            PubInner::Udp(p) => p.subscriber_count(),
        }
    }

    /// The next change in the receiver set of a publication to a multicast
    /// group: a receiver joined (with its tag) or left (timed out, or closed);
    /// `None` when there is none, and always for `shm:` and a `udp:`
    /// publication to one host. Drives the channel when none is queued.
    /// Events are queued (at most [`MAX_RECEIVER_EVENTS`](crate::MAX_RECEIVER_EVENTS));
    /// when the application does not poll them, the oldest are dropped and
    /// counted ([`Counters::receiver_events_dropped`]).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut publ = conduit::Publication::open("udp://239.1.2.3:7000?iface=127.0.0.1")?;
    /// loop {
    ///     match publ.poll_receiver_event() {
    ///         Some(conduit::ReceiverEvent::Joined { addr, .. }) => println!("{addr} joined"),
    ///         Some(e) => println!("{e:?}"),
    ///         None => std::thread::sleep(std::time::Duration::from_millis(10)),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn poll_receiver_event(&mut self) -> Option<crate::ReceiverEvent> {
        match &mut self.inner {
            PubInner::Shm(_) => None,
            PubInner::Udp(p) => p.poll_receiver_event(),
        }
    }

    /// Waits until at least `n` subscribers are attached (see
    /// [`subscriber_count`](Self::subscriber_count)), driving the channel
    /// meanwhile; returns the count. Checks often at first, then about
    /// every millisecond. `n = 0` returns at once.
    ///
    /// ```no_run
    /// # use conduit::Publication;
    /// # use std::time::Duration;
    /// let mut p = Publication::open("shm:orders")?;
    /// p.wait_for_subscribers(2, Duration::from_secs(5))?;
    /// p.offer(1, b"go")?;
    /// # Ok::<(), conduit::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::TimedOut`] when `timeout` passes with fewer attached.
    pub fn wait_for_subscribers(&mut self, n: usize, timeout: Duration) -> Result<usize, Error> {
        let deadline = Instant::now().checked_add(timeout);
        let mut tries = 0u32;
        loop {
            let count = self.subscriber_count();
            if count >= n {
                return Ok(count);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::TimedOut);
            }
            tries = tries.saturating_add(1);
            if tries < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Waits until every message offered so far has been consumed (shm) or
    /// acknowledged (udp) by the connected subscribers, driving I/O meanwhile.
    /// Returns at once when no subscriber is connected.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-flush-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(1, b"last words")?;
    /// std::thread::spawn(move || {
    ///     while sub.poll(|_| {}, 16).unwrap() == 0 {}
    /// });
    /// publ.flush(std::time::Duration::from_secs(10))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TimedOut`] when `timeout` passes first; [`Error::PeerGone`]
    /// if the peer goes away meanwhile.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), Error> {
        match &mut self.inner {
            PubInner::Shm(p) => p.flush(timeout),
            PubInner::Udp(p) => p.flush(timeout),
        }
    }

    /// Largest payload this channel accepts.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-max-len-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// assert_eq!(publ.max_message_len(), 64 * 1024 / 8); // capacity / 8
    /// # Ok(()) }
    /// ```
    pub fn max_message_len(&self) -> usize {
        match &self.inner {
            PubInner::Shm(p) => p.max_message_len(),
            PubInner::Udp(p) => p.max_message_len(),
        }
    }

    /// This handle's counters.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-pub-counters-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(1, b"x")?;
    /// assert_eq!(publ.counters().sent, 1);
    /// assert_eq!(publ.counters().driver, None); // shm: has no I/O driver
    /// # Ok(()) }
    /// ```
    pub fn counters(&self) -> Counters {
        match &self.inner {
            PubInner::Shm(p) => p.counters(),
            PubInner::Udp(p) => p.counters(),
        }
    }
}

impl Subscription {
    /// Opens a subscription to the channel at `uri`. The publication need not
    /// exist yet: polls return 0 until it appears.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let name = format!("doc-sub-open-{}", std::process::id());
    /// let mut sub = conduit::Subscription::open(&format!("shm:{name}?wait=block"))?;
    /// assert_eq!(sub.poll(|_| {}, 16)?, 0); // no publication yet
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a malformed URI or option; when an existing
    /// `shm:` ring cannot be opened: [`Error::NoFreeSlot`],
    /// [`Error::LayoutVersion`], [`Error::NotAChannel`],
    /// [`Error::ForeignOwner`], [`Error::Corrupt`] (a truncated or
    /// inconsistent header) or [`Error::Io`].
    pub fn open(uri: &str) -> Result<Subscription, Error> {
        let mut parsed = ChannelUri::parse(uri)?;
        let inner = match parsed.scheme.clone() {
            Scheme::Shm { name } => {
                let opts = crate::shm::options(name, &mut parsed)?;
                parsed.finish()?;
                SubInner::Shm(ShmSubscription::open(opts)?)
            }
            Scheme::Udp { .. } => {
                let mut s = crate::udp::UdpSubscription::open(parsed)?;
                s.attach_stats(uri);
                SubInner::Udp(s)
            }
        };
        Ok(Subscription {
            inner,
            uri: uri.into(),
        })
    }

    /// Hands up to `limit` messages to `handler`, in order, without blocking.
    /// Each [`Received`] borrows the channel's memory for the call only.
    /// Returns how many were handled.
    ///
    /// A poll drives the channel: over `shm:` it reads ring memory (no system
    /// call; a liveness check every so often when idle); over `udp:` it reads
    /// the socket and runs the protocol's timers (acknowledgements, NAKs).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-poll-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(1, b"a")?;
    /// publ.offer(2, b"b")?;
    /// let mut ids = Vec::new();
    /// let n = sub.poll(|m| ids.push(m.type_id()), 16)?;
    /// assert_eq!((n, ids), (2, vec![1, 2]));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::PeerGone`] once when the publisher's process died (after every
    /// message it committed was delivered; later polls wait for a new
    /// publisher), [`Error::Closed`] when it closed cleanly,
    /// [`Error::Corrupt`] when the channel breaks its invariants,
    /// [`Error::UnrecoverableLoss`] (udp, gap policy `fail`).
    #[inline]
    pub fn poll<F: FnMut(Received<'_>)>(
        &mut self,
        handler: F,
        limit: usize,
    ) -> Result<usize, Error> {
        match &mut self.inner {
            SubInner::Shm(s) => s.poll(handler, limit),
            SubInner::Udp(s) => s.poll(handler, limit),
        }
    }

    /// Does the work of an empty [`poll`](Self::poll) when that is all a poll
    /// would do now, and returns true; false means "call `poll`". Only an
    /// `shm:` subscription with nothing waiting and no periodic check due
    /// answers true (a UDP poll always reads the socket). For bindings that
    /// pay per call to set up a poll (a handler to wrap, a re-entry guard, as
    /// in the C ABI): spinning on an empty channel then stays a few
    /// instructions. A plain Rust loop just calls `poll`.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-poll-idle-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(1, b"a")?;
    /// let mut got = 0;
    /// while got == 0 {
    ///     if !sub.poll_idle() {
    ///         got += sub.poll(|m| assert_eq!(m.payload(), b"a"), 16)?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn poll_idle(&mut self) -> bool {
        match &mut self.inner {
            SubInner::Shm(s) => s.poll_idle(),
            SubInner::Udp(_) => false,
        }
    }

    /// Like [`Subscription::poll`], but waits up to `timeout` for a first
    /// message, using the channel's wait strategy (`wait=spin|yield|block`).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-poll-timeout-{}?wait=block", std::process::id());
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// let n = sub.poll_timeout(|_| {}, 16, std::time::Duration::from_millis(10))?;
    /// assert_eq!(n, 0); // nothing came within 10 ms
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Subscription::poll`].
    pub fn poll_timeout<F: FnMut(Received<'_>)>(
        &mut self,
        mut handler: F,
        limit: usize,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let s = match &mut self.inner {
            SubInner::Shm(s) => s,
            SubInner::Udp(s) => return s.poll_timeout(handler, limit, timeout),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let n = s.poll(&mut handler, limit)?;
            let now = Instant::now();
            if n > 0 || now >= deadline {
                return Ok(n);
            }
            s.wait(deadline - now)?;
        }
    }

    /// True while attached to a live publisher.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-sub-connected-{}", std::process::id());
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// assert!(!sub.is_connected());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// while !publ.is_connected() {
    ///     sub.poll(|_| {}, 1)?;
    /// }
    /// assert!(sub.is_connected());
    /// # Ok(()) }
    /// ```
    pub fn is_connected(&mut self) -> bool {
        match &mut self.inner {
            SubInner::Shm(s) => s.is_connected(),
            SubInner::Udp(s) => s.is_connected(),
        }
    }

    /// This handle's counters.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-sub-counters-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.offer(1, b"x")?;
    /// while sub.poll(|_| {}, 16)? == 0 {}
    /// assert_eq!(sub.counters().received, 1);
    /// # Ok(()) }
    /// ```
    pub fn counters(&self) -> Counters {
        match &self.inner {
            SubInner::Shm(s) => s.counters(),
            SubInner::Udp(s) => s.counters(),
        }
    }

    /// The next change in the set of publisher sessions of a `udp:`
    /// subscription: a session joined, ended (and why) or was replaced by
    /// its restarted publisher; `None` when there is none (always for
    /// `shm:`). Events are queued as polls see them (bounded: 64 + 3 ×
    /// `max_sessions`; drain them now and then).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let mut sub = conduit::Subscription::open("udp://127.0.0.1:0?max_sessions=8")?;
    /// sub.poll(|_| {}, 16)?;
    /// assert_eq!(sub.poll_session_event(), None); // no publisher yet
    /// # Ok(()) }
    /// ```
    pub fn poll_session_event(&mut self) -> Option<crate::SessionEvent> {
        match &mut self.inner {
            SubInner::Shm(_) => None,
            SubInner::Udp(s) => s.poll_session_event(),
        }
    }

    /// The local address a `udp:` subscription is bound to, so a subscription
    /// opened on port 0 can tell its publishers where to send; `None` for `shm:`.
    ///
    /// # Errors
    /// [`Error::Io`] if the socket cannot report its address.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// let sub = conduit::Subscription::open("udp://127.0.0.1:0")?;
    /// let addr = sub.local_addr()?.expect("a udp subscription has an address");
    /// assert_ne!(addr.port(), 0);
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> Result<Option<std::net::SocketAddr>, Error> {
        match &self.inner {
            SubInner::Shm(_) => Ok(None),
            SubInner::Udp(s) => s.local_addr().map(Some),
        }
    }
}

enum ClaimInner<'a> {
    Shm(ring::Claim<'a>),
    Udp(crate::udp::UdpClaim<'a>),
}

/// Bytes reserved in place for one message: fill, then [`Claim::commit`].
/// Dropping a claim aborts it (nothing is published).
///
/// A claim borrows its [`Publication`] mutably: nothing else can be sent
/// until it is committed or dropped. It is `Send` when moved with its borrow.
pub struct Claim<'a> {
    inner: ClaimInner<'a>,
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match &self.inner {
            ClaimInner::Shm(_) => "shm",
            ClaimInner::Udp(_) => "udp",
        };
        f.debug_struct("Claim")
            .field("transport", &transport)
            .field("len", &(**self).len())
            .finish_non_exhaustive()
    }
}

impl Claim<'_> {
    /// The writable payload (also reachable through `DerefMut`). Over `shm:`
    /// it is ring memory, not zeroed.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-claim-slice-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// # let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// let mut claim = publ.try_claim(1, 3)?;
    /// claim.as_mut_slice().copy_from_slice(b"abc");
    /// claim.commit();
    /// # Ok(()) }
    /// ```
    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.inner {
            ClaimInner::Shm(c) => c.as_mut_slice(),
            ClaimInner::Udp(c) => c.as_mut_slice(),
        }
    }

    /// Publishes the message; returns the stream position after it.
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-claim-commit-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// let claim = publ.try_claim(1, 0)?; // the type id alone is the message
    /// let after = claim.commit();
    /// assert!(after > 0);
    /// sub.poll(|m| assert!(m.payload().is_empty()), 1)?;
    /// # Ok(()) }
    /// ```
    #[inline(always)]
    pub fn commit(self) -> u64 {
        match self.inner {
            ClaimInner::Shm(c) => c.commit(),
            ClaimInner::Udp(c) => c.commit(),
        }
    }

    /// Releases the claim without publishing anything (as dropping it does).
    ///
    /// ```
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-claim-abort-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.try_claim(1, 8)?.abort();
    /// assert_eq!(sub.poll(|_| {}, 16)?, 0);
    /// # Ok(()) }
    /// ```
    pub fn abort(self) {
        match self.inner {
            ClaimInner::Shm(c) => c.abort(),
            ClaimInner::Udp(c) => c.abort(),
        }
    }
}

impl std::ops::Deref for Claim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Read access goes through the same buffer as writes.
        match &self.inner {
            ClaimInner::Shm(c) => c.as_slice(),
            ClaimInner::Udp(c) => c.as_slice(),
        }
    }
}

impl std::ops::DerefMut for Claim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

/// A typed message reserved in place: a zeroed `T` to fill, then commit.
pub struct TypedClaim<'a, T: Message> {
    claim: Claim<'a>,
    _t: PhantomData<T>,
}

impl<T: Message> std::fmt::Debug for TypedClaim<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedClaim")
            .field("type_id", &T::TYPE_ID)
            .field("claim", &self.claim)
            .finish()
    }
}

impl<T: Message> TypedClaim<'_, T> {
    /// Publishes the message; returns the stream position after it.
    ///
    /// ```
    /// # use conduit::Message;
    /// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    /// # #[repr(C)]
    /// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// # struct Quote { bid: i64, ask: i64 }
    /// # impl Message for Quote { const TYPE_ID: u32 = 8; }
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-typed-commit-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// let mut q = publ.claim::<Quote>()?;
    /// q.bid = 1;
    /// q.commit();
    /// sub.poll(|m| assert_eq!(m.get::<Quote>().unwrap().bid, 1), 1)?;
    /// # Ok(()) }
    /// ```
    pub fn commit(self) -> u64 {
        self.claim.commit()
    }

    /// Releases the claim without publishing anything (as dropping it does).
    ///
    /// ```
    /// # use conduit::Message;
    /// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
    /// # #[repr(C)]
    /// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    /// # struct Quote { bid: i64, ask: i64 }
    /// # impl Message for Quote { const TYPE_ID: u32 = 8; }
    /// # fn main() -> Result<(), conduit::Error> {
    /// # let uri = format!("shm:doc-typed-abort-{}?capacity=64k", std::process::id());
    /// let mut publ = conduit::Publication::open(&uri)?;
    /// let mut sub = conduit::Subscription::open(&uri)?;
    /// # while !publ.is_connected() { sub.poll(|_| {}, 1)?; }
    /// publ.claim::<Quote>()?.abort();
    /// assert_eq!(sub.poll(|_| {}, 16)?, 0);
    /// # Ok(()) }
    /// ```
    pub fn abort(self) {
        self.claim.abort()
    }
}

impl<T: Message> std::ops::Deref for TypedClaim<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match T::ref_from_prefix(&self.claim) {
            Ok((t, _)) => t,
            // `Publication::claim` checked size and alignment of this very
            // buffer, which does not move while the claim lives.
            Err(_) => unreachable!("claim buffer was checked for T"),
        }
    }
}

impl<T: Message> std::ops::DerefMut for TypedClaim<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match T::mut_from_prefix(self.claim.as_mut_slice()) {
            Ok((t, _)) => t,
            Err(_) => unreachable!("claim buffer was checked for T"),
        }
    }
}

// Keep the derive-free bounds honest: a Message is FromZeros via FromBytes.
const _: fn() = || {
    fn assert_bounds<T: Message + FromZeros + FromBytes + KnownLayout>() {}
    #[repr(C)]
    #[derive(
        zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable,
    )]
    struct Probe {
        _a: u64,
    }
    impl Message for Probe {
        const TYPE_ID: u32 = 0;
    }
    assert_bounds::<Probe>();
};

// Threading, stated in the type docs and held at compile time: handles and
// claims move between threads (`Send`); handles are not `Sync` (every call
// takes `&mut self`); errors and received messages are `Send + Sync`.
const _: fn() = || {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Publication>();
    send::<Subscription>();
    send::<Claim<'static>>();
    send_sync::<Error>();
    send_sync::<Received<'static>>();
    send_sync::<Counters>();
};

// Not `Sync`: resolving `some_item` is ambiguous for a type that is, so this
// stops compiling if a handle becomes `Sync` without its docs changing.
const _: fn() = || {
    trait AmbiguousIfSync<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    #[allow(dead_code)]
    struct IsSync;
    impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}
    let _ = <Publication as AmbiguousIfSync<_>>::some_item;
    let _ = <Subscription as AmbiguousIfSync<_>>::some_item;
};
