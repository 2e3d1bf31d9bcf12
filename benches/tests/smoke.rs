//! Smoke test of the `conduit-bench` binary: a few channels with tiny message
//! counts, checking the exit status, the printed figures and the JSON fields.
//! Behaviour only: no timing is asserted. Every run has a watchdog.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(180);

/// Runs the binary with `args`; kills it and fails if it outlives the watchdog.
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conduit-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start conduit-bench");
    // Drain the pipes on threads so a chatty child cannot block on them.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "watchdog: `conduit-bench {}` still running after {WATCHDOG:?}; killed",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout thread"),
        stderr: err_t.join().expect("stderr thread"),
    }
}

fn ok(args: &[&str]) -> String {
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

/// A file name unique to this call: tests run in parallel and several use the
/// same channel.
fn tmp(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "conduit-bench-smoke-{}-{n}-{name}",
        std::process::id()
    ))
}

/// The raw text of `"key":value` in a flat JSON object (value up to `,`/`}`).
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = json.find(&pat)? + pat.len();
    let rest = &json[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        1 + quoted.find('"')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

fn num(json: &str, key: &str) -> f64 {
    let v = field(json, key).unwrap_or_else(|| panic!("no field {key} in {json}"));
    v.parse::<f64>()
        .unwrap_or_else(|_| panic!("field {key} = {v} is not a number in {json}"))
}

fn check_latency_json(json: &str, channel: &str, size: u64, messages: u64) {
    assert_eq!(
        field(json, "channel"),
        Some(format!("\"{channel}\"").as_str()),
        "{json}"
    );
    assert_eq!(num(json, "size"), size as f64, "{json}");
    assert_eq!(num(json, "messages"), messages as f64, "{json}");
    let keys = [
        "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns",
    ];
    let vals: Vec<f64> = keys.iter().map(|k| num(json, k)).collect();
    assert!(vals[0] > 0.0, "{json}");
    assert!(
        vals.windows(2).all(|w| w[0] <= w[1]),
        "percentiles not ascending: {json}"
    );
    assert!(num(json, "mean_ns") > 0.0, "{json}");
    assert!(num(json, "rss_ping_kib") > 0.0, "{json}");
}

fn latency_run(channel: &str, extra: &[&str]) {
    let path = tmp(&format!("lat-{channel}.json"));
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec![
        "latency",
        "--channel",
        channel,
        "--messages",
        "2000",
        "--warmup",
        "200",
        "--json",
        p,
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    for label in ["p50", "p90", "p99", "p99.9", "p99.99", "max", "peak RSS"] {
        assert!(out.contains(label), "no {label} in output:\n{out}");
    }
    let json = std::fs::read_to_string(&path).expect("json written");
    let _ = std::fs::remove_file(&path);
    check_latency_json(&json, channel, 32, 2000);
    if channel != "crossbeam" {
        assert!(
            num(&json, "rss_pong_kib") > 0.0,
            "child RSS missing: {json}"
        );
    }
}

#[test]
fn latency_limit() {
    latency_run("limit", &[]);
}

#[test]
fn latency_limit_2line() {
    latency_run("limit-2line", &[]);
}

#[test]
fn latency_limit_ring() {
    latency_run("limit-ring", &[]);
}

#[test]
fn latency_limit_fixed_rate() {
    latency_run("limit", &["--rate", "200000"]);
}

#[test]
fn latency_crossbeam() {
    latency_run("crossbeam", &[]);
}

#[test]
fn latency_udp_raw() {
    latency_run("udp-raw", &[]);
}

#[test]
fn latency_udp_raw_block() {
    latency_run("udp-raw-block", &[]);
}

#[test]
fn latency_iceoryx2() {
    latency_run("iceoryx2", &[]);
}

#[cfg(feature = "conduit")]
#[test]
fn latency_shm() {
    latency_run("shm", &[]);
}

fn throughput_run(channel: &str, size: u64) {
    let path = tmp(&format!("tput-{channel}-{size}.json"));
    let p = path.to_str().expect("utf-8 path");
    let s = size.to_string();
    let out = ok(&[
        "throughput",
        "--channel",
        channel,
        "--size",
        &s,
        "--messages",
        "50000",
        "--json",
        p,
    ]);
    assert!(out.contains("msgs/s"), "{out}");
    let json = std::fs::read_to_string(&path).expect("json written");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        field(&json, "channel"),
        Some(format!("\"{channel}\"").as_str()),
        "{json}"
    );
    assert_eq!(num(&json, "size"), size as f64);
    assert_eq!(num(&json, "messages"), 50000.0);
    let mps = num(&json, "msgs_per_sec");
    assert!(mps > 0.0, "{json}");
    let bps = num(&json, "bytes_per_sec");
    assert!(
        (bps - mps * size as f64).abs() <= 1e-6 * bps.max(1.0),
        "{json}"
    );
}

#[test]
fn throughput_crossbeam() {
    throughput_run("crossbeam", 32);
}

#[cfg(feature = "conduit")]
#[test]
fn throughput_shm() {
    throughput_run("shm", 32);
    throughput_run("shm", 4096);
}

#[cfg(feature = "conduit")]
#[test]
fn latency_udp() {
    latency_run("udp", &[]);
}

#[cfg(feature = "conduit")]
#[test]
fn latency_udp_block() {
    latency_run("udp-block", &[]);
}

/// `udp-aead`: conduit over UDP with a pre-shared key file made for the
/// run; round trips and the bulk throughput options.
#[cfg(feature = "conduit")]
#[test]
fn latency_and_throughput_udp_aead() {
    latency_run("udp-aead", &[]);
    throughput_run("udp-aead", 32);
}

#[cfg(feature = "conduit")]
#[test]
fn throughput_proto() {
    throughput_run("proto", 32);
    throughput_run("proto-loss", 32);
}

#[test]
fn compare_writes_table_json_and_plot() {
    let json_path = tmp("compare.json");
    let plot_path = tmp("compare.svg");
    let out = ok(&[
        "compare",
        "--channels",
        "crossbeam,udp-raw",
        "--messages",
        "1000",
        "--json",
        json_path.to_str().expect("utf-8"),
        "--plot",
        plot_path.to_str().expect("utf-8"),
    ]);
    for row in [
        "limit #1",
        "crossbeam",
        "udp-raw",
        "limit #3",
        "One-way throughput",
    ] {
        assert!(out.contains(row), "no `{row}` in table:\n{out}");
    }
    let json = std::fs::read_to_string(&json_path).expect("json written");
    let svg = std::fs::read_to_string(&plot_path).expect("plot written");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&plot_path);
    assert!(json.starts_with("{\"results\":["), "{json}");
    // Three limit runs, two channels, one throughput row.
    assert_eq!(json.matches("\"kind\":\"latency\"").count(), 5, "{json}");
    assert_eq!(json.matches("\"kind\":\"throughput\"").count(), 1, "{json}");
    assert_eq!(json.matches("\"p50_vs_limit\":").count(), 2, "{json}");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    assert!(
        svg.contains("udp-raw") && svg.contains("limit"),
        "legend missing"
    );
}

/// conduit over UDP is also measured interleaved with the bare socket in
/// the same wait mode, in the same two processes; both halves are reported
/// side by side.
#[cfg(feature = "conduit")]
#[test]
fn compare_interleaves_udp_with_udp_raw() {
    let json_path = tmp("compare-udp.json");
    let out = ok(&[
        "compare",
        "--channels",
        "udp-raw,udp,udp-raw-block,udp-block",
        "--messages",
        "4000",
        "--no-throughput",
        "--json",
        json_path.to_str().expect("utf-8"),
    ]);
    let json = std::fs::read_to_string(&json_path).expect("json written");
    let _ = std::fs::remove_file(&json_path);
    assert!(out.contains("interleaved"), "no interleaved table:\n{out}");
    for row in ["udp [", "udp-block ["] {
        let line = out
            .lines()
            .skip_while(|l| !l.contains("interleaved"))
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no `{row}` row in the interleaved table:\n{out}"));
        // channel, p50, raw p50, ratio, p99, raw p99, ratio
        let cols: Vec<f64> = line
            .split_whitespace()
            .skip(2)
            .map(|c| c.parse().expect("number"))
            .collect();
        assert_eq!(cols.len(), 6, "{line}");
        // Each ratio is its two round-trip times' quotient, to the two
        // decimals printed. A ratio itself may print as 0.00: a descheduled
        // block of bare-socket round trips can put their p99 in
        // milliseconds on a loaded machine.
        for (t, raw, ratio) in [(cols[0], cols[1], cols[2]), (cols[3], cols[4], cols[5])] {
            assert!(t > 0.0 && raw > 0.0, "{line}");
            assert!((ratio - t / raw).abs() <= 0.0051, "{line}");
        }
    }
    // One pair per wait mode, each against the bare socket in that mode.
    assert_eq!(json.matches("\"role\":\"vs_udp_raw\"").count(), 2, "{json}");
    let pairs: Vec<&str> = json
        .split('{')
        .filter(|o| o.contains("\"role\":\"vs_udp_raw\""))
        .collect();
    for (channel, raw) in [("udp", "udp-raw"), ("udp-block", "udp-raw-block")] {
        let o = pairs
            .iter()
            .find(|o| o.contains(&format!("\"channel\":\"{channel}\"")))
            .unwrap_or_else(|| panic!("no {channel} pair: {json}"));
        assert!(
            o.contains(&format!("\"udp_raw_channel\":\"{raw}\"")),
            "{channel} not against {raw}: {json}"
        );
    }
    for key in ["p50_vs_udp_raw", "p99_vs_udp_raw", "udp_raw_p50_ns"] {
        let v = num(&json, key);
        assert!(v.is_finite() && v > 0.0, "{key}: {json}");
    }
}

/// `udp-aead` is interleaved with `udp-raw` like the other spinning UDP
/// channels, and its throughput row is judged against plain `udp`.
#[cfg(feature = "conduit")]
#[test]
fn compare_runs_udp_aead_against_udp_raw_and_udp() {
    let json_path = tmp("compare-aead.json");
    let out = ok(&[
        "compare",
        "--channels",
        "udp-raw,udp,udp-aead",
        "--messages",
        "3000",
        "--json",
        json_path.to_str().expect("utf-8"),
    ]);
    let json = std::fs::read_to_string(&json_path).expect("json written");
    let _ = std::fs::remove_file(&json_path);
    let pair = json
        .split('{')
        .find(|o| o.contains("\"role\":\"vs_udp_raw\"") && o.contains("\"channel\":\"udp-aead\""))
        .unwrap_or_else(|| panic!("no udp-aead pair: {json}"));
    assert!(pair.contains("\"udp_raw_channel\":\"udp-raw\""), "{json}");
    let row = out
        .lines()
        .skip_while(|l| !l.contains("One-way throughput"))
        .find(|l| l.starts_with("udp-aead "))
        .unwrap_or_else(|| panic!("no udp-aead throughput row:\n{out}"));
    assert!(row.contains("× udp"), "{row}");
    let t = json
        .split('{')
        .find(|o| o.contains("\"channel\":\"udp-aead\"") && o.contains("msgs_per_sec"))
        .unwrap_or_else(|| panic!("no udp-aead throughput result: {json}"));
    assert!(t.contains("\"reference\":\"udp\""), "{t}");
}

#[test]
fn bad_input_is_a_clear_error() {
    for (args, needle) in [
        (&["latency", "--channel", "nope"][..], "unknown channel"),
        (
            &["latency", "--channel", "limit", "--size", "4"][..],
            "too small",
        ),
        (
            &["throughput", "--channel", "limit"][..],
            "no throughput test",
        ),
        (&["latency"][..], "--channel"),
        (
            &["latency", "--channel", "crossbeam", "--size", "33"][..],
            "not supported",
        ),
    ] {
        let o = bench(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in: {err}"
        );
    }
}
