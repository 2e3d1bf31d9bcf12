//! Publishes `Quote` messages on a channel.
//!
//! ```text
//! cargo run --release -p conduit --example subscriber -- shm:quotes   # terminal 1
//! cargo run --release -p conduit --example publisher  -- shm:quotes   # terminal 2
//! ```
//!
//! Any channel URI works (`shm:NAME?...` or `udp://HOST:PORT?...`). The
//! optional second argument is how many messages to send (default 1000000).

mod common;

use common::Quote;
use conduit::{Error, Publication};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "shm:quotes".to_owned());
    let count: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let mut publication = Publication::open(&uri)?;
    eprintln!("publishing {count} quotes on {uri}; waiting for a subscriber...");
    while !publication.is_connected() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    let mut seq = 0u64;
    let mut back_pressured = 0u64;
    while seq < count {
        // Write the struct in place in the channel's memory: no copy, no
        // serialisation.
        match publication.claim::<Quote>() {
            Ok(mut q) => {
                q.seq = seq;
                q.price = 10_000 + (seq % 100) as i64;
                q.qty = 100;
                q.side = (seq & 1) as u8;
                q.commit();
                seq += 1;
            }
            Err(Error::BackPressured) => {
                back_pressured += 1;
                std::hint::spin_loop();
            }
            Err(Error::NotConnected) => {
                eprintln!("subscriber left after {seq} quotes");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    publication.flush(Duration::from_secs(5))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "sent {seq} quotes in {secs:.3} s ({:.1} M msgs/s), back-pressured {back_pressured} times",
        seq as f64 / secs / 1e6
    );
    Ok(())
}
