//! [`ReceiverEvent`]: the receivers a group (multicast) publication sees join and leave.

use std::net::SocketAddr;

/// Most receiver events a publication queues for
/// [`Publication::poll_receiver_event`](crate::Publication::poll_receiver_event): four per
/// receiver of a full set. When the application does not drain them, the oldest is dropped and
/// counted ([`Counters::receiver_events_dropped`](crate::Counters::receiver_events_dropped)).
pub const MAX_RECEIVER_EVENTS: usize = 4 * conduit_proto::MAX_RECEIVERS;

/// Why a receiver left a group publication's receiver set ([`ReceiverEvent::Gone`]).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiverGoneReason {
    /// Silent past the receiver timeout (`receiver_timeout=`); it joins again if it comes
    /// back.
    TimedOut,
    /// It closed its subscription, or a restarted receiver at the same address replaced it.
    Left,
}

/// A change in the receiver set of a publication to a multicast group (`udp://GROUP:PORT`),
/// from [`Publication::poll_receiver_event`](crate::Publication::poll_receiver_event).
///
/// ```
/// # fn main() -> Result<(), conduit::Error> {
/// let mut publ = conduit::Publication::open("udp://127.0.0.1:9")?;
/// while let Some(e) = publ.poll_receiver_event() {
///     match e {
///         conduit::ReceiverEvent::Joined { addr, tag, .. } => println!("{addr} joined ({tag:?})"),
///         conduit::ReceiverEvent::Gone { addr, reason, .. } => println!("{addr} left ({reason:?})"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiverEvent {
    /// A receiver accepted the publication's session and its first status arrived: it
    /// counts in [`subscriber_count`](crate::Publication::subscriber_count) (and, with
    /// `flow=min` or a matching tag, bounds the flow window).
    Joined {
        /// The receiver's unicast address.
        addr: SocketAddr,
        /// Its random id (a new one when it restarts).
        receiver_id: u32,
        /// Its `group_tag=`, if it has one.
        tag: Option<u32>,
    },
    /// A receiver reported [`Joined`](Self::Joined) left the set.
    Gone {
        /// The receiver's unicast address.
        addr: SocketAddr,
        /// Its random id.
        receiver_id: u32,
        /// Why.
        reason: ReceiverGoneReason,
    },
}

impl ReceiverEvent {
    /// The receiver event for a protocol event, if it is one.
    pub(crate) fn from_proto(e: &conduit_proto::Event) -> Option<ReceiverEvent> {
        match *e {
            conduit_proto::Event::ReceiverJoined {
                receiver_id,
                addr,
                tag,
            } => Some(ReceiverEvent::Joined {
                addr,
                receiver_id,
                tag,
            }),
            conduit_proto::Event::ReceiverGone {
                receiver_id,
                addr,
                timed_out,
            } => Some(ReceiverEvent::Gone {
                addr,
                receiver_id,
                reason: if timed_out {
                    ReceiverGoneReason::TimedOut
                } else {
                    ReceiverGoneReason::Left
                },
            }),
            _ => None,
        }
    }
}

/// The bounded queue of a publication's receiver events: the oldest is dropped (and counted)
/// when it is full.
#[derive(Debug, Default)]
pub(crate) struct ReceiverEvents {
    queue: std::collections::VecDeque<ReceiverEvent>,
    /// Events dropped because the queue was full.
    pub(crate) dropped: u64,
}

impl ReceiverEvents {
    /// Queues `e`, dropping the oldest when full.
    pub(crate) fn push(&mut self, e: ReceiverEvent) {
        if self.queue.len() >= MAX_RECEIVER_EVENTS {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(e);
    }

    /// The oldest queued event.
    pub(crate) fn pop(&mut self) -> Option<ReceiverEvent> {
        self.queue.pop_front()
    }

    /// Whether none is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_and_drops_the_oldest() {
        let mut q = ReceiverEvents::default();
        let ev = |i: u32| ReceiverEvent::Joined {
            addr: SocketAddr::from(([10, 0, 0, 1], 7000)),
            receiver_id: i,
            tag: None,
        };
        for i in 0..MAX_RECEIVER_EVENTS as u32 + 3 {
            q.push(ev(i));
        }
        assert_eq!(q.dropped, 3);
        assert_eq!(q.pop(), Some(ev(3)), "the oldest three were dropped");
        let mut n = 1;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_RECEIVER_EVENTS);
        assert!(q.is_empty());
    }

    #[test]
    fn maps_the_protocol_events() {
        let addr = SocketAddr::from(([10, 0, 0, 2], 7000));
        let gone = conduit_proto::Event::ReceiverGone {
            receiver_id: 5,
            addr,
            timed_out: true,
        };
        assert_eq!(
            ReceiverEvent::from_proto(&gone),
            Some(ReceiverEvent::Gone {
                addr,
                receiver_id: 5,
                reason: ReceiverGoneReason::TimedOut
            })
        );
        assert_eq!(
            ReceiverEvent::from_proto(&conduit_proto::Event::PeerGone),
            None
        );
    }
}
