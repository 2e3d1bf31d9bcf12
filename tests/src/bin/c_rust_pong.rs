//! Rust pong for the C ping (`ffi/examples/ping.c`): echoes every message of
//! PING_URI on PONG_URI through the `conduit` crate until ping's stop
//! message (type 2). Gives up after 30 s without a message.
//!
//! Usage: `c_rust_pong PING_URI PONG_URI`

use conduit::{Error, Publication, Subscription};
use std::time::{Duration, Instant};

const TYPE_STOP: u32 = 2;
const STALL: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: c_rust_pong PING_URI PONG_URI");
        std::process::exit(2);
    }
    let mut sub = Subscription::open(&args[1]).unwrap_or_else(|e| fail("open subscription", e));
    let mut publ = Publication::open(&args[2]).unwrap_or_else(|e| fail("open publication", e));
    let mut stop = false;
    let mut last = Instant::now();
    let mut spins = 0u32;
    while !stop {
        let n = sub
            .poll(
                |m| {
                    if m.type_id() == TYPE_STOP {
                        stop = true;
                        return;
                    }
                    let start = Instant::now();
                    loop {
                        match publ.offer(m.type_id(), m.payload()) {
                            Ok(_) => break,
                            Err(Error::BackPressured | Error::NotConnected)
                                if start.elapsed() < STALL => {}
                            Err(e) => fail("echo", e),
                        }
                    }
                },
                16,
            )
            .unwrap_or_else(|e| fail("poll", e));
        if n > 0 {
            spins = 0;
            continue;
        }
        spins += 1;
        if spins == 1 {
            last = Instant::now();
        } else if spins % 4096 == 0 && last.elapsed() > STALL {
            eprintln!("c_rust_pong: nothing from ping for 30 s");
            std::process::exit(1);
        }
    }
    let _ = publ.flush(Duration::from_millis(100));
}

fn fail(what: &str, e: Error) -> ! {
    eprintln!("c_rust_pong: {what}: {e}");
    std::process::exit(1);
}
