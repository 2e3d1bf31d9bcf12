//! Flow control on the sender: the receiver's position and window bound what is sent, and the
//! log's capacity bounds what is offered.

/// Sender-side flow control state.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    /// Receiver's position: everything before it is acknowledged and released.
    pub(crate) acked: u64,
    /// The receiver's advertised window (bytes beyond `acked` it accepts).
    pub(crate) window: u64,
}

impl Flow {
    /// Starts at `position` with `window`.
    pub(crate) fn new(position: u64, window: u64) -> Flow {
        Flow {
            acked: position,
            window,
        }
    }

    /// Highest position that may be sent.
    #[inline]
    pub(crate) fn send_limit(&self) -> u64 {
        self.acked + self.window
    }

    /// Whether `size` more bytes may be appended at `tail` to a log of `capacity` bytes;
    /// `slack` is room kept for a padding record. Small appends need window room; a large one
    /// (fragmented message) is admitted once half the window is free, then paced by the window
    /// as it is sent.
    /// `retained` is the oldest position the log must keep (at most `acked`).
    #[inline]
    pub(crate) fn admits(
        &self,
        tail: u64,
        size: u64,
        slack: u64,
        capacity: u64,
        retained: u64,
    ) -> bool {
        let used = tail - self.acked;
        (used + size <= self.window || used < self.window / 2)
            && tail - retained + size + slack <= capacity
    }
}
