//! UDP channels: conduit's reliable protocol ([`crate::proto`]) carried over
//! UDP by an io_uring driver or a plain socket driver.
//!
//! - A [`Publication`](crate::Publication) opened with
//!   `Publication::open("udp://HOST:PORT?...")` sends a stream to one
//!   subscription; a [`Subscription`](crate::Subscription) opened with
//!   `Subscription::open("udp://BIND_ADDR:PORT?...")` receives it.
//! - Both ends share one endpoint core (`endpoint.rs`): the protocol end,
//!   the driver, the send staging and the transmit loop, run inline or with
//!   a progress thread. The protocol builds every datagram and GSO batch
//!   (`poll_transmit`); this layer only sends them.
//! - Options are listed in [`options`]; every one is validated with an error
//!   naming it.
//! - Progress (handshake, heartbeats, status messages, NAK repair, liveness)
//!   runs inside the application's calls (`offer`, `poll`, `is_connected`,
//!   `flush`); `progress=thread` adds a background thread for applications
//!   that go idle. There is no async runtime.
//!
//! # Sessions
//! A subscription serves up to `max_sessions` (default 16, 1..=1024)
//! publication sessions at once, each its own ordered, exactly-once stream
//! with its own window, reassembly, liveness and NAK repair; every message
//! says which one sent it ([`Received::source`](crate::Received::source):
//! [`Source::Udp`](crate::Source::Udp), address and session id) and where it
//! lies in that session's stream ([`Received::position`](crate::Received::position)).
//! [`Subscription::poll_session_event`](crate::Subscription::poll_session_event)
//! reports sessions joining, ending (closed, timed out, failed) and being
//! replaced. `poll` takes the sessions' kept messages in turn, so a busy one
//! does not hold a quiet one back. A publication proves its address with a
//! cookie before its session is accepted (see [`crate::proto`]); session
//! ids, initial positions and nonces come from the OS random source. When
//! every place holds a live session, another publication is refused: its
//! `offer` and `flush` fail with [`Error::SessionRefused`](crate::Error::SessionRefused)
//! (`CONDUIT_SESSION_REFUSED`), nothing it offers is accepted, and it keeps
//! asking, so it gets a place once a session ends (closed, or silent past
//! `liveness`); a live session is never evicted. With `max_sessions=1` that
//! holds for every second publication (one session at a time). A
//! publication restarted at the same address (a fixed `bind=` port)
//! replaces its old session at once, and the subscription's `poll` reports
//! [`Error::SessionReplaced`](crate::Error::SessionReplaced) once. `poll`
//! also reports [`Error::PeerGone`](crate::Error::PeerGone) and
//! [`Error::Closed`](crate::Error::Closed) once per session that ends. A
//! publication whose `mtu`
//! exceeds the subscription's is rejected: both ends report
//! [`Error::MtuMismatch`](crate::Error::MtuMismatch), so bulk options (`mtu=60k`) go on both ends.
//! `flush` is `Ok` only once the publication's own subscriber acknowledged
//! everything offered.
//!
//! # Drivers
//! The I/O layer lives in the crate-private `driver*` and `sys` modules,
//! the only place in this crate with `unsafe` code: the socket driver
//! (non-blocking socket, `recvmmsg`/`sendmmsg`, GSO/GRO) and the io_uring
//! driver (multishot receive into a provided-buffer ring, batched sends;
//! cargo feature `uring`, on by default, see [`uring_available`]). The socket driver is
//! the default in both the busy-poll and the blocking mode (`conduit-bench
//! compare` measures both; the README has the figures): busy-polling, the
//! socket driver's poll is one `recv`, while every io_uring poll enters the
//! kernel to run the ring's deferred work (which copies the datagram into a
//! provided buffer and posts a completion), so its round trip is the longer
//! one; blocking, the two are about even. A blocking wait is one
//! `poll` on both of the socket driver's sockets; after it, only the sockets
//! it found ready are read.
//!
//! # Claims
//! `Publication::try_claim`, `claim` and `offer_with` write in place over
//! UDP too: a claim is one record reserved in the protocol sender's log
//! ([`Sender::claim_in`](crate::proto::Sender::claim_in)), the memory its
//! datagram is built from, so the message is copied once, into the
//! datagram. A claim is at most one record's payload (a little under the
//! `mtu`; [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) beyond);
//! `offer_with` copies longer messages through a scratch buffer. The claim
//! holds the publication's core while it lives: with `progress=thread`,
//! it keeps the core's lock, and the thread, which only ever tries the
//! lock, skips its steps until the claim is committed or dropped, so commit
//! and abort keep it brief. The
//! room is reserved when the claim is made, and nothing else runs on the
//! sender meanwhile, so a commit cannot fail and returns the stream
//! position after the message.
//! A claim leaked with `mem::forget` keeps the core: the publication's next
//! call panics (with `progress=thread`; without, the claim merely vanishes).
//!
//! # The latency path
//! With the socket driver an offer is one `send` on a connected socket and a
//! busy poll one `recv`, as with a bare socket. An offer or commit that is
//! all the sender has to send builds its datagram at once
//! ([`Sender::transmit_offered`](crate::proto::Sender::transmit_offered));
//! a poll after a delivery calls `poll_transmit` only when a timer is due or
//! [`Receiver::transmit_pending`](crate::proto::Receiver::transmit_pending).
//! A subscription that has a
//! sender receives it on a second socket connected to that sender
//! (see `UdpSubscription` in `subscription.rs`): the kernel finds it by the full address pair and
//! no source address is copied out; the bound socket still takes strangers
//! and a restarted sender. The functions between the application's call and
//! the system call are inlined (`#[inline(always)]`): on return from the
//! kernel, whose deep call chains overwrite the CPU's return-address
//! predictor, every frame still open above the system call costs a
//! mispredicted return (about 7 ns each on the 2-vCPU AMD VM, measured with
//! a bare socket loop under 0 to 12 extra frames).
//!
//! Force a driver with `?driver=uring|socket` or `CONDUIT_UDP_DRIVER`;
//! `prefer-uring` takes io_uring where it can be set up and falls back to
//! the socket driver where it cannot (ENOSYS, EPERM from
//! `kernel.io_uring_disabled` or a seccomp filter, EINVAL from an old
//! kernel) or where this build has no io_uring. The driver in use is
//! logged once (through the `log` crate, with conduit's `log` feature) and
//! shown in [`Counters::driver`](crate::Counters::driver).
//!
//! # Throughput
//! By default (`linger=0`) every `offer` sends at once: lowest latency, one
//! datagram per message. `linger=DURATION` lets offered messages wait up to
//! that long to fill datagrams and GSO batches (a background thread sends
//! the tail); `linger=50us&window=16m&mtu=60k` on loopback moved 32-byte
//! messages at 16–23 M msgs/s (660–800 messages per datagram, 24–29 k
//! datagrams/s) on the 2-vCPU VM (`conduit-bench compare`, README). Keep
//! `window` within the receiver's `rcvbuf`, or the kernel drops what
//! overflows (repaired by NAKs, at a cost).
//!
//! # Keys
//! `key=PATH` (or `CONDUIT_UDP_KEY_FILE`) names a 32-byte pre-shared key
//! file; with it every datagram is encrypted and authenticated
//! (AES-256-GCM, 32 bytes per datagram, per-session keys, a replay window).
//! What that protects and what not, and how to make a key file:
//! [`key_file`].
//!
//! # Memory per channel
//! Bounded by the configuration, never by the peer:
//! - publication: `retransmit` (a power of two at least `window` plus the
//!   framed `max_msg` plus `mtu`; 2 MiB with defaults), plus send staging of
//!   `min(64, 1 MiB / mtu)` × `mtu`, plus the receive ring `rx_batch` × slot;
//! - subscription: `window` (reorder ring), plus 64 KiB scratch, plus
//!   reassembly up to `max_msg` (grown only by fragmented messages), plus
//!   the receive ring `rx_batch` × slot, plus one `mtu` for status frames;
//!
//! where slot = 64 KiB + 29 bytes with GRO (default `rx_batch` 8), else
//! `mtu` (default `rx_batch` 32). [`UdpOptions::memory_bound`] computes it.
//! Kernel socket buffers (`rcvbuf`, `sndbuf`, 4 MiB requested) come on top,
//! twice for a subscription with the socket driver once it follows a sender.

mod driver;
mod driver_socket;
#[cfg(feature = "uring")]
mod driver_uring;
mod endpoint;
pub mod key_file;
mod logging;
pub mod options;
mod packet_tx;
mod publication;
mod subscription;
mod sys;

pub use driver::{uring_available, DriverChoice, DriverConfig};
pub use options::{UdpOptions, WaitMode};
pub(crate) use publication::{UdpClaim, UdpPublication};
pub(crate) use subscription::UdpSubscription;

/// A random seed for session and receiver ids (std's per-process random
/// hash keys mixed with the time).
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(all(
    test,
    feature = "uring",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod driver_fallback_tests;
#[cfg(test)]
mod loopback_tests;
#[cfg(test)]
mod sessions_tests;
