//! Counters of one endpoint: traffic, repairs and every drop by reason.

/// Why an incoming datagram (or part of one) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than its frame header or than the lengths it declares.
    Truncated = 0,
    /// A version this session does not speak.
    BadVersion,
    /// An unknown frame kind, or a kind this role never receives.
    UnknownType,
    /// A length field that lies (record longer than the datagram, bad padding, bad NAK count).
    BadLength,
    /// Checksum mismatch: corrupted on the way.
    Checksum,
    /// A position outside the window (too far ahead, or beyond what was sent).
    OutOfWindow,
    /// Data already received (duplicate or replay).
    Duplicate,
    /// A session id that is not the current one.
    WrongSession,
    /// A stream id that is not ours.
    WrongStream,
    /// A source address that is not the peer's.
    WrongSource,
    /// A frame that is valid but not expected now (e.g. data before any setup).
    Unexpected,
    /// A message longer than the maximum message length.
    MessageTooLarge,
    /// A NAK ignored because the same range was just retransmitted (rate limiting).
    NakSuppressed,
    /// A keyed datagram whose tag did not verify (wrong key, or altered on the way).
    AuthFailed,
    /// A keyed datagram whose packet number was seen before or is older than the replay window.
    Replay,
    /// A plain datagram at an endpoint that has a key.
    Plaintext,
    /// A keyed datagram at an endpoint that has no key.
    Encrypted,
    /// A setup with a cookie that this receiver did not issue for it, or that expired (the
    /// sender is challenged again).
    BadCookie,
    /// A proven setup refused because another live session owns the receiver.
    SessionRefused,
    /// A proven setup rejected because the sender's MTU exceeds the receiver's.
    MtuMismatch,
    /// Larger than the receive buffer (a datagram of a peer with a larger
    /// MTU): cut by the kernel, dropped by the driver.
    Oversized,
}

/// Number of [`DropReason`]s.
pub const DROP_REASONS: usize = 21;

impl DropReason {
    /// All reasons, in counter order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::UnknownType,
        DropReason::BadLength,
        DropReason::Checksum,
        DropReason::OutOfWindow,
        DropReason::Duplicate,
        DropReason::WrongSession,
        DropReason::WrongStream,
        DropReason::WrongSource,
        DropReason::Unexpected,
        DropReason::MessageTooLarge,
        DropReason::NakSuppressed,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::Plaintext,
        DropReason::Encrypted,
        DropReason::BadCookie,
        DropReason::SessionRefused,
        DropReason::MtuMismatch,
        DropReason::Oversized,
    ];

    /// Stable snake-case name (for counters output).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadLength => "bad_length",
            DropReason::Checksum => "checksum",
            DropReason::OutOfWindow => "out_of_window",
            DropReason::Duplicate => "duplicate",
            DropReason::WrongSession => "wrong_session",
            DropReason::WrongStream => "wrong_stream",
            DropReason::WrongSource => "wrong_source",
            DropReason::Unexpected => "unexpected",
            DropReason::MessageTooLarge => "message_too_large",
            DropReason::NakSuppressed => "nak_suppressed",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::Plaintext => "plaintext",
            DropReason::Encrypted => "encrypted",
            DropReason::BadCookie => "bad_cookie",
            DropReason::SessionRefused => "session_refused",
            DropReason::MtuMismatch => "mtu_mismatch",
            DropReason::Oversized => "oversized",
        }
    }
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams sent (all kinds).
    pub datagrams_sent: u64,
    /// Datagrams received (all kinds, before validation).
    pub datagrams_received: u64,
    /// Messages offered (sender) or delivered (receiver).
    pub messages: u64,
    /// Payload bytes offered (sender) or delivered (receiver).
    pub bytes: u64,
    /// Data datagrams retransmitted (sender).
    pub retransmitted: u64,
    /// NAK frames sent (receiver).
    pub naks_sent: u64,
    /// NAK frames received (sender).
    pub naks_received: u64,
    /// Heartbeats sent (sender) or received (receiver).
    pub heartbeats: u64,
    /// Status frames sent (receiver) or received (sender).
    pub status: u64,
    /// Offers refused for back-pressure (sender).
    pub back_pressured: u64,
    /// Drops, indexed by [`DropReason`].
    pub drops: [u64; DROP_REASONS],
    /// Stream bytes retransmitted (sender): bounded by the repair budget.
    pub retransmitted_bytes: u64,
    /// Times a retransmission waited for the repair budget (sender).
    pub repair_throttled: u64,
    /// Gaps in the stream detected (receiver): data arrived beyond the
    /// highest position held, leaving a hole.
    pub gaps_detected: u64,
    /// Gaps repaired (receiver): the position reached data held beyond a
    /// hole (a retransmission or a late datagram filled it).
    pub gaps_repaired: u64,
    /// Gaps declared lost (receiver): the sender confirmed it no longer
    /// holds the data.
    pub gaps_unrecoverable: u64,
    /// When the last gap was detected.
    pub last_gap: Option<std::time::Instant>,
    /// When the last gap was declared lost.
    pub last_unrecoverable: Option<std::time::Instant>,
    /// Offers refused because no receiver was connected (sender).
    pub not_connected: u64,
}

impl Counters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(name, count)` for every reason.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drops[*r as usize]))
    }
}
