//! Events an endpoint reports to its owner through `poll_event`.

/// Something the application should know about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed (sender), or a sender's session was accepted or resumed
    /// (receiver).
    Connected {
        /// The sender's session id.
        session_id: u32,
        /// Negotiated protocol version.
        version: u16,
    },
    /// The peer was not heard from within the liveness timeout.
    PeerGone,
    /// The peer speaks no version in common with us. Both ranges are inclusive.
    VersionMismatch {
        /// Our range.
        local: (u16, u16),
        /// The peer's range.
        remote: (u16, u16),
    },
    /// Stream bytes `[from, to)` can never be delivered: the sender no longer holds them.
    /// With [`GapPolicy::Fail`](super::GapPolicy::Fail) the stream stops; with
    /// [`GapPolicy::Skip`](super::GapPolicy::Skip) delivery goes on at `to`.
    UnrecoverableLoss {
        /// First lost position.
        from: u64,
        /// Position where delivery resumes (or would have).
        to: u64,
    },
    /// A receiver dropped its session for a new one from a restarted sender.
    SessionReplaced {
        /// Previous session id.
        old: u32,
        /// New session id.
        new: u32,
    },
    /// The peer closed the stream.
    Closed,
    /// Sender: the receiver refused this session because another live session owns it. The
    /// sender keeps asking (backing off), and takes over once that session is gone.
    SessionRefused,
    /// The sender's datagrams would be larger than the receiver takes: the receiver rejected
    /// the session. Reported by both ends; the sender stops.
    MtuMismatch {
        /// This end's MTU.
        local: usize,
        /// The peer's MTU.
        remote: usize,
    },
    /// One end has a key and the other none, or the keys differ: the ends cannot talk.
    /// Reported once per peer; nothing else changes (the evidence is unauthenticated).
    KeyMismatch,
    /// Sender with a group destination: a receiver joined the receiver set: it accepted the
    /// session, and its first status since arrived (which says its tag).
    ReceiverJoined {
        /// The receiver's random id.
        receiver_id: u32,
        /// Its unicast address.
        addr: std::net::SocketAddr,
        /// Its flow tag (`group_tag=`), if it has one.
        tag: Option<u32>,
    },
    /// Sender with a group destination: a receiver reported joined left the receiver set:
    /// silent for [`Config::receiver_timeout`](super::Config::receiver_timeout) (`timed_out`),
    /// closed, or replaced by a restarted receiver at its address. It no longer bounds the
    /// flow window.
    ReceiverGone {
        /// The receiver's random id.
        receiver_id: u32,
        /// Its unicast address.
        addr: std::net::SocketAddr,
        /// Silent past the timeout (otherwise it closed).
        timed_out: bool,
    },
}
