//! `CONDUIT_STATS=0` turns the counters file off. One test in its own
//! binary: it sets the process's environment before the first handle opens.

use conduit::{Publication, Subscription};

#[test]
fn conduit_stats_0_writes_nothing() {
    let tmp = conduit_test_util::TempDir::on_tmpfs("stats-off");
    std::env::set_var("CONDUIT_SHM_DIR", tmp.path());
    std::env::set_var("CONDUIT_STATS", "0");
    let uri = format!("shm:stats-off-{}", std::process::id());
    let mut publ = Publication::open(&uri).unwrap();
    let mut sub = Subscription::open(&uri).unwrap();
    while !publ.is_connected() {
        sub.poll(|_| {}, 1).unwrap();
    }
    publ.offer(1, b"x").unwrap();
    let udp = Subscription::open("udp://127.0.0.1:0").unwrap();
    assert!(conduit::stats_file().is_none());
    assert!(!tmp.join("conduit-stats").exists());
    drop((publ, sub, udp));
    std::env::remove_var("CONDUIT_SHM_DIR");
    std::env::remove_var("CONDUIT_STATS");
}
