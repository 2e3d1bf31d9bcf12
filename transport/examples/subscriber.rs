//! Receives `Quote` messages from a channel and checks their order.
//!
//! Start it before or after the publisher: see `publisher.rs`.

mod common;

use common::Quote;
use conduit::{Error, Subscription};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "shm:quotes".to_owned());
    let mut subscription = Subscription::open(&uri)?;
    eprintln!("subscribed to {uri}; Ctrl-C to stop");
    let mut expected: Option<u64> = None;
    let mut received = 0u64;
    let mut last_report = Instant::now();
    loop {
        let polled = subscription.poll_timeout(
            |msg| match msg.get::<Quote>() {
                Ok(q) => {
                    if let Some(e) = expected {
                        if q.seq != e {
                            eprintln!("out of order: got {} expected {e}", q.seq);
                        }
                    }
                    expected = Some(q.seq + 1);
                    received += 1;
                }
                Err(e) => eprintln!("skipping a message: {e}"),
            },
            256,
            Duration::from_millis(100),
        );
        match polled {
            Ok(_) => {}
            Err(Error::PeerGone) => eprintln!("publisher died; waiting for a new one"),
            Err(Error::Closed) => {
                eprintln!("publisher closed; {received} quotes received");
                expected = None;
            }
            Err(e) => return Err(e.into()),
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("{received} quotes received");
            last_report = Instant::now();
        }
    }
}
