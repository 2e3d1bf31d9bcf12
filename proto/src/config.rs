//! Protocol configuration: every knob with its default and its validation.

use std::time::Duration;

use super::crypto::Psk;
use super::frame;

/// What the receiver does when data it is missing is no longer held by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapPolicy {
    /// Report [`Event::UnrecoverableLoss`](super::Event::UnrecoverableLoss) and stop the stream
    /// (the default: a reliable stream never silently skips data).
    Fail,
    /// Report [`Event::UnrecoverableLoss`](super::Event::UnrecoverableLoss), skip to the next
    /// message the sender still holds and go on (latest-value feeds).
    Skip,
}

/// Knobs of one protocol endpoint. Both sides of a stream should use compatible values; the
/// sender adopts the receiver's window, the receiver enforces its own limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stream id carried by every frame; frames of another stream are dropped.
    pub stream_id: u32,
    /// Largest datagram this endpoint sends (bytes, UDP payload). Default 1408.
    pub mtu: usize,
    /// Receiver window: bytes beyond the receiver's position it buffers, and the most the sender
    /// keeps unacknowledged on the wire. Power of two. Default 256 KiB.
    pub window: usize,
    /// Sender retransmit buffer (its log ring) in bytes. Power of two, at least
    /// `window` plus one framed maximum-size message. Default 4 MiB.
    pub retransmit_buffer: usize,
    /// Largest message, fragmented on the wire. Default 1 MiB, at most 16 MiB.
    pub max_message_len: usize,
    /// A peer not heard from for this long is gone. Default 1 s.
    pub liveness_timeout: Duration,
    /// The sender sends a heartbeat after this much idle time. Default 50 ms. Also the period
    /// of the repair budget's floor (see [Repair bounds](super#repair-bounds)).
    pub heartbeat_interval: Duration,
    /// The receiver sends a status at least this often. Default 50 ms.
    pub status_interval: Duration,
    /// Delay before the receiver NAKs a new gap (reordering tolerance). Default 50 µs.
    pub nak_delay: Duration,
    /// Upper bound of the NAK retry back-off. Default 50 ms.
    pub nak_retry_max: Duration,
    /// Interval between handshake attempts and RTT probes while connecting. Default 10 ms.
    pub setup_interval: Duration,
    /// Interval between RTT measurements once connected. Default 100 ms.
    pub rtt_interval: Duration,
    /// Receiver behaviour on unrecoverable loss.
    pub gap_policy: GapPolicy,
    /// Protocol versions this endpoint speaks, inclusive (lowest, highest).
    pub versions: (u16, u16),
    /// Checksum every datagram (detects corruption the network did not catch). Default on.
    pub checksum: bool,
    /// Pre-shared key: when set, every datagram is encrypted and authenticated
    /// ([`crypto`](super::crypto)). Both ends need the same key. Default none.
    pub key: Option<Psk>,
    /// Receiver ([`Sessions`](super::Sessions)): most concurrent sender sessions, each its
    /// own stream with its own buffers; a sender beyond them is refused. 1 to
    /// [`MAX_SESSIONS_LIMIT`]; default 16. 1 keeps one session at a time, which a new one
    /// replaces only once it is no longer live.
    pub max_sessions: usize,
    /// Sender with a group (multicast) destination: which receivers bound what is sent and
    /// released ([`FlowStrategy`]). Ignored for a unicast destination. Default
    /// [`FlowStrategy::Min`].
    pub flow: FlowStrategy,
    /// Sender with a group destination: a receiver not heard from for this long leaves the
    /// receiver set and is reported ([`Event::ReceiverGone`](super::Event::ReceiverGone)).
    /// Default 2 s.
    pub receiver_timeout: Duration,
    /// Receiver: the tag its status messages declare on a group stream (what
    /// [`FlowStrategy::Tagged`] selects on). Default none.
    pub group_tag: Option<u32>,
    /// Receiver of a group stream: the longest random delay before the first NAK of a gap
    /// (the NAK suppression interval `T`, see [Groups](super#groups)); with an RTT estimate
    /// the receiver uses `min(T, max(16 * srtt, 8 * (srtt + 4 * rttvar), nak_delay))`, so
    /// `T` is reached only before the first RTT sample, on slow links (`srtt` over `T / 16`)
    /// and on loaded hosts (scheduling delays spread the RTT samples). Default 30 ms.
    pub group_nak_backoff: Duration,
    /// Receiver of a group stream: the group size the NAK delay distribution is tuned for
    /// (`N` in [Groups](super#groups)); receivers do not know the real size. Default 10.
    pub group_size_estimate: u32,
}

/// Which receivers of a group bound a sender's flow window and log (see
/// [Groups](super#groups)).
///
/// ```
/// use conduit_proto::{Config, FlowStrategy};
/// let c = Config { flow: FlowStrategy::Tagged { tag: 7, min_receivers: 2 }, ..Config::default() };
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowStrategy {
    /// The slowest receiver bounds the window; a receiver silent past
    /// [`Config::receiver_timeout`] stops counting. Nothing is lost by a live receiver.
    Min,
    /// The fastest receiver bounds the window and releases the log: slower receivers may
    /// find data gone and report [`Event::UnrecoverableLoss`](super::Event::UnrecoverableLoss).
    Max,
    /// Only receivers whose status declares `tag` count (as for `Min`), and the sender is
    /// connected only while at least `min_receivers` of them are in the set.
    Tagged {
        /// The tag a receiver must declare ([`Config::group_tag`]).
        tag: u32,
        /// Counted receivers needed before (and while) sending.
        min_receivers: u32,
    },
}

/// Largest [`Config::max_sessions`].
pub const MAX_SESSIONS_LIMIT: usize = 1024;

/// Lowest MTU accepted: a data frame must fit a record header and some payload.
pub const MIN_MTU: usize = 128;
/// Highest MTU accepted (largest UDP payload over IPv4).
pub const MAX_MTU: usize = 65_504;
/// Largest message length a configuration may allow.
pub const MAX_MESSAGE_LEN_LIMIT: usize = 16 << 20;
/// Protocol versions this implementation speaks.
pub const SUPPORTED_VERSIONS: (u16, u16) = (2, 3);
/// Lowest protocol version a group (multicast) session speaks: version 3 adds the receiver's
/// tag to status messages and the group flags.
pub const GROUP_VERSION: u16 = 3;

impl Default for Config {
    fn default() -> Self {
        Config {
            stream_id: 1,
            mtu: 1408,
            window: 256 << 10,
            retransmit_buffer: 4 << 20,
            max_message_len: 1 << 20,
            liveness_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(50),
            status_interval: Duration::from_millis(50),
            nak_delay: Duration::from_micros(50),
            nak_retry_max: Duration::from_millis(50),
            setup_interval: Duration::from_millis(10),
            rtt_interval: Duration::from_millis(100),
            gap_policy: GapPolicy::Fail,
            versions: SUPPORTED_VERSIONS,
            checksum: true,
            key: None,
            max_sessions: 16,
            flow: FlowStrategy::Min,
            receiver_timeout: Duration::from_secs(2),
            group_tag: None,
            group_nak_backoff: Duration::from_millis(30),
            group_size_estimate: 10,
        }
    }
}

impl Config {
    /// Largest payload of one record (one unfragmented message, or one fragment).
    pub fn max_record_payload(&self) -> usize {
        (self.frame_mtu() - frame::DATA_HEADER_LEN - frame::RECORD_HEADER_LEN) & !7
    }

    /// Largest plain frame: the MTU, less the AEAD overhead when keyed.
    pub fn frame_mtu(&self) -> usize {
        if self.key.is_some() {
            self.mtu - super::crypto::OVERHEAD
        } else {
            self.mtu
        }
    }

    /// Bytes a message of `len` bytes occupies in the log, fragment headers and padding included.
    pub fn framed_len(&self, len: usize) -> usize {
        let max = self.max_record_payload();
        let full = len / max;
        let rest = len % max;
        let mut total = full * (frame::RECORD_HEADER_LEN + max);
        if rest > 0 || len == 0 {
            total += frame::record_size(rest);
        }
        total
    }

    /// Checks every knob.
    ///
    /// # Errors
    /// A message naming the first knob that is out of range and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.mtu < MIN_MTU || self.mtu > MAX_MTU {
            return Err(format!(
                "mtu {} out of range {MIN_MTU}..={MAX_MTU}",
                self.mtu
            ));
        }
        if !self.window.is_power_of_two() || self.window < 4 * self.mtu || self.window > 1 << 30 {
            return Err(format!(
                "window {} must be a power of two between 4 * mtu ({}) and 1 GiB",
                self.window,
                4 * self.mtu
            ));
        }
        if self.max_message_len == 0 || self.max_message_len > MAX_MESSAGE_LEN_LIMIT {
            return Err(format!(
                "max message length {} out of range 1..={MAX_MESSAGE_LEN_LIMIT}",
                self.max_message_len
            ));
        }
        let need = self.window + self.framed_len(self.max_message_len) + self.mtu;
        if !self.retransmit_buffer.is_power_of_two()
            || self.retransmit_buffer < need
            || self.retransmit_buffer > 1 << 31
        {
            return Err(format!(
                "retransmit buffer {} must be a power of two of at least window + framed max message + mtu = {need} (and at most 2 GiB)",
                self.retransmit_buffer
            ));
        }
        let (lo, hi) = self.versions;
        if lo == 0 || lo > hi {
            return Err(format!("version range {lo}..={hi} is empty or starts at 0"));
        }
        for (name, d) in [
            ("liveness timeout", self.liveness_timeout),
            ("heartbeat interval", self.heartbeat_interval),
            ("status interval", self.status_interval),
            ("nak delay", self.nak_delay),
            ("nak retry max", self.nak_retry_max),
            ("setup interval", self.setup_interval),
            ("rtt interval", self.rtt_interval),
            ("receiver timeout", self.receiver_timeout),
            ("group nak backoff", self.group_nak_backoff),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(format!(
                    "{name} {d:?} must be between 0 and 1 h (exclusive of 0)"
                ));
            }
        }
        if self.liveness_timeout < 2 * self.heartbeat_interval
            || self.liveness_timeout < 2 * self.status_interval
        {
            return Err(format!(
                "liveness timeout {:?} must be at least twice the heartbeat ({:?}) and status ({:?}) intervals",
                self.liveness_timeout, self.heartbeat_interval, self.status_interval
            ));
        }
        if self.max_sessions == 0 || self.max_sessions > MAX_SESSIONS_LIMIT {
            return Err(format!(
                "max sessions {} out of range 1..={MAX_SESSIONS_LIMIT}",
                self.max_sessions
            ));
        }
        if self.group_size_estimate == 0 || self.group_size_estimate > 1 << 20 {
            return Err(format!(
                "group size estimate {} out of range 1..=2^20",
                self.group_size_estimate
            ));
        }
        if let FlowStrategy::Tagged { min_receivers, .. } = self.flow {
            if min_receivers as usize > crate::group::MAX_RECEIVERS {
                return Err(format!(
                    "min receivers {min_receivers} exceeds the receiver set bound {}",
                    crate::group::MAX_RECEIVERS
                ));
            }
        }
        Ok(())
    }
}
