//! Replays the committed seed corpus and a few thousand pseudo-random inputs
//! through every harness (on stable, without libFuzzer), so a harness bug
//! shows in `cargo test`. The ignored `write_seeds` regenerates the seeds.

use std::path::Path;

type Run = fn(&[u8]);

const TARGETS: &[(&str, Run)] = &[
    ("receiver_datagram", conduit_fuzz::receiver::run),
    ("sender_datagram", conduit_fuzz::sender::run),
    ("uri_parse", conduit_fuzz::uri::run),
    ("ring_scribble", conduit_fuzz::ring::run),
    ("counters_file", conduit_fuzz::counters::run),
    ("sessions_datagram", conduit_fuzz::sessions::run),
];

fn corpus() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))
}

/// Writes the generated seeds (run it when the harness or the protocol
/// changes: `cargo test --test corpus -- --ignored write_seeds`).
#[test]
#[ignore]
fn write_seeds() {
    for (target, name, bytes) in conduit_fuzz::seeds::all() {
        let dir = corpus().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

#[test]
fn seeds_replay() {
    for &(target, run) in TARGETS {
        let dir = corpus().join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            run(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds for {target}");
    }
}

/// The seeds get past the checksums, the session checks and the layout checks
/// into the data paths (this fails when a protocol change leaves the harness
/// behind: then the fuzzer only tests the first few checks).
#[test]
fn seeds_reach_the_data_paths() {
    let read = |t: &str, n: &str| std::fs::read(corpus().join(t).join(n)).unwrap();
    let base = conduit_fuzz::sender::acked(&[]);
    assert!(conduit_fuzz::receiver::delivered(&read("receiver_datagram", "seed-in-order")) > 2000);
    assert!(conduit_fuzz::receiver::delivered(&read("receiver_datagram", "seed-gaps")) > 2000);
    assert!(
        conduit_fuzz::receiver::delivered(&read("receiver_datagram", "seed-live-sender")) > 2000
    );
    assert!(conduit_fuzz::sender::acked(&read("sender_datagram", "seed-replies")) > base);
    assert!(conduit_fuzz::sender::acked(&read("sender_datagram", "seed-live-receiver")) > base);
    assert!(conduit_fuzz::ring::polled(&read("ring_scribble", "seed-offers-polls")) >= 8);
    assert_eq!(
        conduit_fuzz::counters::slots(&read("counters_file", "seed-two-slots")),
        2
    );
    for seed in ["seed-stream-3-places", "seed-restart", "seed-timeout"] {
        let n = conduit_fuzz::sessions::delivered(&read("sessions_datagram", seed));
        assert!(n > 2 * 2308, "{seed}: {n} bytes delivered");
    }
}

#[test]
fn random_inputs() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for &(_, run) in TARGETS {
        for _ in 0..300 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            run(&data);
        }
    }
}
