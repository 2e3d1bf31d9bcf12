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
/// `udp://HOST:PORT` for a reliable stream to another host. One publication
/// per channel; it is not `Sync`: use it from one thread at a time.
pub struct Publication {
    inner: PubInner,
}

/// The receiving end of a channel.
///
/// Each subscription receives every message, in order, from the point it
/// joined. It may be opened before its publication exists.
pub struct Subscription {
    inner: SubInner,
}

impl std::fmt::Debug for Publication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publication").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Publication {
    /// Opens the publication of the channel at `uri`.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a malformed URI or parameter; for `shm:`,
    /// [`Error::InvalidArgument`] when a live publisher already owns the name
    /// and [`Error::Io`] when the ring file cannot be created.
    pub fn open(uri: &str) -> Result<Publication, Error> {
        let mut parsed = ChannelUri::parse(uri)?;
        let inner = match parsed.scheme.clone() {
            Scheme::Shm { name } => {
                let opts = crate::shm::options(name, &mut parsed)?;
                parsed.finish()?;
                PubInner::Shm(ShmPublication::open(opts)?)
            }
            Scheme::Udp { .. } => PubInner::Udp(crate::udp::UdpPublication::open(parsed)?),
        };
        Ok(Publication { inner })
    }

    /// Reserves `len` bytes for a message with `type_id`, lets `fill` write
    /// them in place and publishes the message: [`try_claim`](Self::try_claim)
    /// and [`Claim::commit`] in one call, with no claim to hold. Over `shm:`
    /// `fill` writes ring memory directly; its bytes are not zeroed first.
    /// Returns the stream position after the message.
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
            PubInner::Shm(p) => {
                let pos = p
                    .ring
                    .offer_with(type_id, len, fill)
                    .map_err(crate::shm::offer_error)?;
                p.sent += 1;
                Ok(pos)
            }
            PubInner::Udp(p) => {
                let mut claim = p.try_claim(type_id, len)?;
                fill(claim.as_mut_slice());
                Ok(claim.commit())
            }
        }
    }

    /// Copies `payload` into a new message with `type_id`.
    ///
    /// Returns the stream position after the message.
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
    /// # Errors
    /// As [`Publication::offer`].
    #[inline]
    pub fn send<T: Message>(&mut self, msg: &T) -> Result<u64, Error> {
        self.offer(T::TYPE_ID, msg.as_bytes())
    }

    /// Reserves `len` bytes in place (ring memory or send buffer) for a
    /// message with `type_id`. Fill them, then [`Claim::commit`]; dropping
    /// the claim aborts it.
    ///
    /// When the message is filled at once, [`offer_with`](Self::offer_with)
    /// does the same in one call and compiles to tighter code: moving a
    /// `Claim` out of its `Result` can cost a stalled reload in a hot loop.
    ///
    /// # Errors
    /// As [`Publication::offer`].
    #[inline(always)]
    pub fn try_claim(&mut self, type_id: u32, len: usize) -> Result<Claim<'_>, Error> {
        match &mut self.inner {
            PubInner::Shm(p) => {
                let c = p
                    .ring
                    .try_claim(type_id, len)
                    .map_err(crate::shm::offer_error)?;
                p.sent += 1;
                Ok(Claim {
                    inner: ClaimInner::Shm(c),
                })
            }
            PubInner::Udp(p) => Ok(Claim {
                inner: ClaimInner::Udp(p.try_claim(type_id, len)?),
            }),
        }
    }

    /// Reserves a zeroed `T` in place; fill it and [`TypedClaim::commit`].
    ///
    /// # Errors
    /// As [`Publication::offer`].
    pub fn claim<T: Message>(&mut self) -> Result<TypedClaim<'_, T>, Error> {
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
    /// live (udp). Also drives the channel's timers.
    pub fn is_connected(&mut self) -> bool {
        match &mut self.inner {
            PubInner::Shm(p) => p.ring.is_connected(),
            PubInner::Udp(p) => p.is_connected(),
        }
    }

    /// Subscribers attached now: for `shm:`, live subscriptions holding a
    /// slot (an evicted one still counts until it leaves; dead ones are
    /// reaped first); for `udp:`, 1 while the subscriber's session is
    /// connected, else 0. Also drives the channel's timers.
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
            PubInner::Udp(p) => usize::from(p.is_connected()),
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
    pub fn max_message_len(&self) -> usize {
        match &self.inner {
            PubInner::Shm(p) => p.ring.max_message_len(),
            PubInner::Udp(p) => p.max_message_len(),
        }
    }

    /// This handle's counters.
    pub fn counters(&self) -> Counters {
        match &self.inner {
            PubInner::Shm(p) => Counters {
                sent: p.sent,
                ..Counters::default()
            },
            PubInner::Udp(p) => p.counters(),
        }
    }
}

impl Subscription {
    /// Opens a subscription to the channel at `uri`. The publication need not
    /// exist yet: polls return 0 until it appears.
    ///
    /// # Errors
    /// [`Error::InvalidUri`] for a malformed URI or parameter; [`Error::Io`]
    /// or [`Error::InvalidArgument`] when an existing channel cannot be opened
    /// (not a conduit file, wrong layout version, truncated).
    pub fn open(uri: &str) -> Result<Subscription, Error> {
        let mut parsed = ChannelUri::parse(uri)?;
        let inner = match parsed.scheme.clone() {
            Scheme::Shm { name } => {
                let opts = crate::shm::options(name, &mut parsed)?;
                parsed.finish()?;
                SubInner::Shm(ShmSubscription::open(opts)?)
            }
            Scheme::Udp { .. } => SubInner::Udp(crate::udp::UdpSubscription::open(parsed)?),
        };
        Ok(Subscription { inner })
    }

    /// Hands up to `limit` messages to `handler`, in order, without blocking.
    /// Each [`Received`] borrows the channel's memory for the call only.
    /// Returns how many were handled.
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
    /// answers true (a UDP poll always reads the socket). Meant for bindings
    /// that pay per call (the C ABI); Rust callers just call `poll`.
    #[doc(hidden)]
    #[inline]
    pub fn poll_idle(&mut self) -> bool {
        match &mut self.inner {
            SubInner::Shm(s) => s.ring.poll_idle(),
            SubInner::Udp(_) => false,
        }
    }

    /// Like [`Subscription::poll`], but waits up to `timeout` for a first
    /// message, using the channel's wait strategy (`wait=spin|yield|block`).
    ///
    /// # Errors
    /// As [`Subscription::poll`].
    pub fn poll_timeout<F: FnMut(Received<'_>)>(
        &mut self,
        mut handler: F,
        limit: usize,
        timeout: Duration,
    ) -> Result<usize, Error> {
        if let SubInner::Udp(s) = &mut self.inner {
            return s.poll_timeout(handler, limit, timeout);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.poll(&mut handler, limit)?;
            let now = Instant::now();
            if n > 0 || now >= deadline {
                return Ok(n);
            }
            match &mut self.inner {
                SubInner::Shm(s) => s.wait(deadline - now)?,
                SubInner::Udp(_) => {}
            }
        }
    }

    /// True while attached to a live publisher.
    pub fn is_connected(&mut self) -> bool {
        match &mut self.inner {
            SubInner::Shm(s) => s.ring.is_connected(),
            SubInner::Udp(s) => s.is_connected(),
        }
    }

    /// This handle's counters.
    pub fn counters(&self) -> Counters {
        match &self.inner {
            SubInner::Shm(s) => Counters {
                received: s.received,
                ..Counters::default()
            },
            SubInner::Udp(s) => s.counters(),
        }
    }
}

enum ClaimInner<'a> {
    Shm(ring::Claim<'a>),
    Udp(crate::udp::UdpClaim<'a>),
}

/// Bytes reserved in place for one message: fill, then [`Claim::commit`].
/// Dropping a claim aborts it (nothing is published).
pub struct Claim<'a> {
    inner: ClaimInner<'a>,
}

impl Claim<'_> {
    /// The writable payload.
    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.inner {
            ClaimInner::Shm(c) => c.as_mut_slice(),
            ClaimInner::Udp(c) => c.as_mut_slice(),
        }
    }

    /// Publishes the message; returns the stream position after it.
    #[inline(always)]
    pub fn commit(self) -> u64 {
        match self.inner {
            ClaimInner::Shm(c) => c.commit(),
            ClaimInner::Udp(c) => c.commit(),
        }
    }

    /// Releases the claim without publishing anything.
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

impl<T: Message> TypedClaim<'_, T> {
    /// Publishes the message; returns the stream position after it.
    pub fn commit(self) -> u64 {
        self.claim.commit()
    }

    /// Releases the claim without publishing anything.
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
