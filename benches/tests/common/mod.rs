//! Helpers shared by the tests that run the `conduit-bench` binary: every
//! run has a watchdog.

// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How long one run of the binary may take before it is killed.
pub const WATCHDOG: Duration = Duration::from_secs(180);

/// Runs the binary with `args` and the environment variables `env`; kills
/// it and fails if it outlives the watchdog.
pub fn bench_env(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_conduit-bench"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start conduit-bench");
    let what = format!("conduit-bench {}", args.join(" "));
    conduit_test_util::wait_output(child, &what, WATCHDOG)
}

/// Runs the binary with `args`; kills it and fails if it outlives the
/// watchdog.
pub fn bench(args: &[&str]) -> Output {
    bench_env(args, &[])
}

/// Runs the binary with `args`, which must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = bench(args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "`conduit-bench {}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// The result of a failing run, with its output for the message.
pub fn fails(args: &[&str]) -> String {
    let o = bench(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "`conduit-bench {}` succeeded:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

/// Each of `cases` (arguments, and a part of the error expected) fails
/// with that error.
pub fn refused(cases: &[(&[&str], &str)]) {
    for &(args, needle) in cases {
        let o = bench(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in: {err}"
        );
    }
}

/// A file name in the temporary directory unique to this call: tests run
/// in parallel and several use the same channel.
pub fn tmp(prefix: &str, name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("{prefix}-{}-{n}-{name}", std::process::id()))
}

/// An `mpsc` document's shares of the messages: one per publisher, adding
/// up to 1.
pub fn check_shares(j: &Value, publishers: u64) -> Vec<f64> {
    let shares: Vec<f64> = j["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(shares.len() as u64, publishers, "{j}");
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{j}");
    shares
}

/// The JSON document at `path`.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("json written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}
