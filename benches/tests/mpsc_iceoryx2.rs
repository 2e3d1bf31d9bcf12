//! `mpsc --channels`: the iceoryx2 row of the `mpsc` topology, alone and
//! alternating with conduit's. Behaviour only: no timing is asserted. Every
//! run has a watchdog.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// Runs the binary with `args`, its rings in `shm_dir`.
fn bench_in(args: &[&str], shm_dir: &Path) -> Output {
    common::bench_env(args, &[("CONDUIT_SHM_DIR", shm_dir.as_os_str())])
}

fn bench(args: &[&str]) -> Output {
    bench_in(args, &std::env::temp_dir())
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("mpsc-iox2", name)
}

/// Runs `mpsc` with `args` and `--json`; returns the status, the stderr and
/// the document. A starved publisher fails the run (a loaded host may
/// starve one; that is the run's job), and the document says so.
fn run(args: &[&str], file: &str) -> (bool, String, Value) {
    let json = tmp(file);
    let path = json.to_str().unwrap();
    let mut all = vec!["mpsc"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", path]);
    let o = bench(&all);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON from {all:?} ({e}): {stderr}"));
    let _ = std::fs::remove_file(&json);
    (
        o.status.success(),
        stderr,
        serde_json::from_str(&text).unwrap(),
    )
}

fn check_run(j: &Value, channel: &str, publishers: u64) {
    assert_eq!(j["topology"], "mpsc", "{j}");
    assert_eq!(j["channel"], channel, "{j}");
    assert_eq!(j["publishers"], publishers, "{j}");
    common::check_shares(j, publishers);
    assert!(j["msgs_per_sec"].as_f64().unwrap() > 0.0, "{j}");
    if channel == "iceoryx2-mpsc" {
        assert_eq!(j["lost"].as_array().unwrap().len() as u64, publishers);
        assert!(j["buffer_per_publisher"].as_u64().unwrap() >= 1);
    }
}

/// Runs `mpsc` with two iceoryx2 publishers, `args` and 50k messages;
/// checks the run and its mode and that it failed only for a starved
/// publisher; returns the document.
fn two_iceoryx2_publishers(args: &[&str], mode: &str, file: &str) -> Value {
    let mut all = vec!["--publishers", "2"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--messages", "50k"]);
    let (ok, stderr, j) = run(&all, file);
    check_run(&j, "iceoryx2-mpsc", 2);
    assert_eq!(j["iceoryx2_mode"], mode);
    assert_eq!(ok, j["starved"].as_array().unwrap().is_empty(), "{stderr}");
    j
}

#[test]
fn iceoryx2_alone_loses_nothing_without_overflow() {
    let j = two_iceoryx2_publishers(&["--channels", "iceoryx2-mpsc"], "retry", "alone.json");
    // No overflow: every message of every publisher arrives.
    assert!(j["lost"].as_array().unwrap().iter().all(|l| l == 0), "{j}");
}

#[test]
fn iceoryx2_spinning_publishers_lose_nothing() {
    let j = two_iceoryx2_publishers(
        &["--channels", "iceoryx2", "--iceoryx2", "spin"],
        "spin",
        "spin.json",
    );
    assert!(j["lost"].as_array().unwrap().iter().all(|l| l == 0), "{j}");
}

#[test]
fn overflow_mode_reports_its_losses() {
    // Losses are figures in this mode, not a failure.
    two_iceoryx2_publishers(
        &["--channels", "iceoryx2", "--iceoryx2", "overflow"],
        "overflow",
        "overflow.json",
    );
}

#[test]
#[cfg(feature = "conduit")]
fn both_channels_alternate_with_a_summary() {
    let (ok, stderr, j) = run(
        &[
            "--publishers",
            "2",
            "--channels",
            "shm-mpsc,iceoryx2-mpsc",
            "--rounds",
            "2",
            "--messages",
            "50k",
        ],
        "both.json",
    );
    let runs = j["runs"].as_array().unwrap();
    let order: Vec<&str> = runs
        .iter()
        .map(|r| r["channel"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["shm-mpsc", "iceoryx2-mpsc", "shm-mpsc", "iceoryx2-mpsc"]
    );
    for r in runs {
        check_run(r, r["channel"].as_str().unwrap(), 2);
    }
    let summary = j["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2);
    for s in summary {
        let (lo, mid, hi) = (
            s["msgs_per_sec_min"].as_f64().unwrap(),
            s["msgs_per_sec_median"].as_f64().unwrap(),
            s["msgs_per_sec_max"].as_f64().unwrap(),
        );
        assert!(lo <= mid && mid <= hi, "{s}");
        assert_eq!(s["runs"], 2);
    }
    let failed: u64 = summary
        .iter()
        .map(|s| s["failed_runs"].as_u64().unwrap())
        .sum();
    assert_eq!(ok, failed == 0, "{stderr}");
}

/// The conduit runs' publishers are killed, so none closes the ring: `mpsc`
/// removes its ring and lock files itself.
#[test]
#[cfg(feature = "conduit")]
fn conduit_runs_leave_no_ring_files() {
    let dir = Path::new("/dev/shm").join(format!("mpsc-iox2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = tmp("files.json");
    // Plain `mpsc` (conduit alone), then both channels.
    let plain = bench_in(&["mpsc", "--messages", "20k"], &dir);
    let o = bench_in(
        &[
            "mpsc",
            "--channels",
            "shm-mpsc,iceoryx2-mpsc",
            "--messages",
            "20k",
            "--json",
            json.to_str().unwrap(),
        ],
        &dir,
    );
    let _ = std::fs::remove_file(&json);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // (`conduit-stats/` holds the processes' counters files.)
        .filter(|n| n.contains("mpsc"))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    for o in [plain, o] {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() || stderr.contains("starved"), "{stderr}");
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_options_are_refused() {
    common::refused(&[
        (&["mpsc", "--channels", "udp"], "not an mpsc channel"),
        (&["mpsc", "--iceoryx2", "block"], "not an iceoryx2 mode"),
        (&["mpsc", "--rounds", "0"], "1 or more rounds"),
        (
            &["mpsc", "--channels", "iceoryx2", "--size", "8"],
            "--size 16 or more",
        ),
    ]);
}
