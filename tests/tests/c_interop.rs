//! C against Rust over `shm:`, in both directions: a C program (built
//! against libconduit) publishes and the `conduit` crate subscribes, and the
//! reverse. Every message is checked: type id, length (0 included), bytes.

mod c_support;

use c_support::{compile, expect_success, run_ping_pong, scratch, spawn, wait, Link};
use conduit::{Error, Publication, Subscription};
use conduit_test_util::{free_udp_ports, watchdog};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 100_000;

/// The tests here each run two busy-polling sides: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// The message pattern of ffi/tests/c/interop.c.
fn type_of(k: u64) -> u32 {
    1000 + (k % 7) as u32
}
fn len_of(k: u64) -> usize {
    (k % 97) as usize
}
fn byte_of(k: u64, j: usize) -> u8 {
    ((k * 31 + j as u64) & 0xff) as u8
}

#[test]
fn c_publishes_rust_subscribes() {
    let _serial = serial();
    let _watchdog = watchdog("c_publishes_rust_subscribes", 300);
    let dir = scratch("c-to-rust");
    let exe = compile("tests/c/interop.c", &dir, Link::Static);
    let rings = scratch("c-to-rust-rings");
    let uri = format!("shm:c2r?dir={}&capacity=64k", rings.display());
    let mut sub = Subscription::open(&uri).expect("open subscription");

    let mut cmd = Command::new(&exe);
    cmd.args(["publish", &uri, &MESSAGES.to_string()]);
    let child = spawn(cmd, "C publisher");

    let mut next = 0u64;
    let mut last_progress = Instant::now();
    while next < MESSAGES {
        let n = sub
            .poll(
                |m| {
                    let k = next;
                    next += 1;
                    assert_eq!(m.type_id(), type_of(k), "message {k}: type id");
                    let payload = m.payload();
                    assert_eq!(payload.len(), len_of(k), "message {k}: length");
                    for (j, b) in payload.iter().enumerate() {
                        assert_eq!(*b, byte_of(k, j), "message {k}: byte {j}");
                    }
                },
                256,
            )
            .unwrap_or_else(|e| panic!("poll after {next} messages: {e}"));
        if n > 0 {
            last_progress = Instant::now();
        } else {
            assert!(
                last_progress.elapsed() < Duration::from_secs(60),
                "no message for 60 s after {next} of {MESSAGES}"
            );
            std::hint::spin_loop();
        }
    }
    let stdout = expect_success(&wait(child, "C publisher"), "C publisher");
    assert!(
        stdout.contains(&format!("published {MESSAGES}")),
        "{stdout}"
    );
}

#[test]
fn rust_publishes_c_subscribes() {
    let _serial = serial();
    let _watchdog = watchdog("rust_publishes_c_subscribes", 300);
    let dir = scratch("rust-to-c");
    let exe = compile("tests/c/interop.c", &dir, Link::Shared);
    let rings = scratch("rust-to-c-rings");
    let uri = format!("shm:r2c?dir={}&capacity=64k", rings.display());

    let mut cmd = Command::new(&exe);
    cmd.args(["subscribe", &uri, &MESSAGES.to_string()]);
    let child = spawn(cmd, "C subscriber");

    let mut publ = Publication::open(&uri).expect("open publication");
    let mut buf = [0u8; 128];
    for k in 0..MESSAGES {
        let len = len_of(k);
        for (j, b) in buf[..len].iter_mut().enumerate() {
            *b = byte_of(k, j);
        }
        let start = Instant::now();
        loop {
            let result = if k % 2 == 0 {
                publ.offer(type_of(k), &buf[..len]).map(|_| ())
            } else {
                publ.try_claim(type_of(k), len).map(|mut claim| {
                    claim.copy_from_slice(&buf[..len]);
                    claim.commit();
                })
            };
            match result {
                Ok(()) => break,
                Err(Error::BackPressured | Error::NotConnected) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "message {k}: no room for 60 s (is the C subscriber running?)"
                    );
                    std::hint::spin_loop();
                }
                Err(e) => panic!("message {k}: {e}"),
            }
        }
    }
    publ.flush(Duration::from_secs(60)).expect("flush");
    let stdout = expect_success(&wait(child, "C subscriber"), "C subscriber");
    assert!(stdout.contains(&format!("received {MESSAGES}")), "{stdout}");
}

#[test]
fn c_ping_against_rust_pong() {
    let _serial = serial();
    let dir = scratch("c-ping-rust-pong");
    let ping = compile("examples/ping.c", &dir, Link::Shared);
    let rings = scratch("c-ping-rust-pong-rings");
    let ping_uri = format!("shm:ping?dir={}", rings.display());
    let pong_uri = format!("shm:pong?dir={}", rings.display());
    let mut pong_cmd = Command::new(env!("CARGO_BIN_EXE_c_rust_pong"));
    pong_cmd.args([&ping_uri, &pong_uri]);
    let mut ping_cmd = Command::new(&ping);
    ping_cmd.args([&ping_uri, &pong_uri, "10000", "1000", "32"]);
    run_ping_pong(("C ping", ping_cmd), ("Rust pong", pong_cmd), 10000);
}

/// The same C programs over `udp://` on loopback: the ABI passes any URI
/// through to the transport.
#[test]
fn c_ping_pong_over_udp() {
    let _serial = serial();
    let dir = scratch("udp-ping-pong");
    let ping = compile("examples/ping.c", &dir, Link::Shared);
    let pong = compile("examples/pong.c", &dir, Link::Static);
    let [ping_port, pong_port] = free_udp_ports();
    let ping_uri = format!("udp://127.0.0.1:{ping_port}");
    let pong_uri = format!("udp://127.0.0.1:{pong_port}");
    let mut pong_cmd = Command::new(&pong);
    pong_cmd.args([&ping_uri, &pong_uri]);
    let mut ping_cmd = Command::new(&ping);
    ping_cmd.args([&ping_uri, &pong_uri, "2000", "200", "32"]);
    run_ping_pong(("ping", ping_cmd), ("pong", pong_cmd), 2000);
}
