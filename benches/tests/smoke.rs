//! Smoke test of the `conduit-bench` binary: a few channels with tiny message
//! counts, checking the exit status, the printed figures and the JSON fields.
//! Behaviour only: no timing is asserted. Every run has a watchdog.

mod common;

use std::path::Path;
#[cfg(feature = "conduit")]
use std::process::{Command, Stdio};

use common::{bench, fails, ok, read_json, refused};
use serde_json::Value;

/// A file name unique to this call: tests run in parallel and several use the
/// same channel.
fn tmp(name: &str) -> std::path::PathBuf {
    common::tmp("conduit-bench-smoke", name)
}

/// Checks one latency result's fields.
fn check_latency(j: &Value, channel: &str, size: u64, messages: u64) {
    assert_eq!(j["channel"], channel, "{j}");
    assert_eq!(j["size"], size, "{j}");
    assert_eq!(j["messages"], messages, "{j}");
    let keys = [
        "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns",
    ];
    let vals: Vec<u64> = keys
        .iter()
        .map(|k| j[k].as_u64().unwrap_or_else(|| panic!("no {k} in {j}")))
        .collect();
    assert!(vals[0] > 0, "{j}");
    assert!(
        vals.windows(2).all(|w| w[0] <= w[1]),
        "percentiles not ascending: {j}"
    );
    assert!(j["mean_ns"].as_f64().expect("mean") > 0.0, "{j}");
    assert!(j["rss_ping_kib"].as_u64().expect("rss") > 0, "{j}");
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
    let json = read_json(&path);
    // `report` prints the saved run again, percentiles read from its
    // histogram.
    let again = ok(&["report", p]);
    let p50 = json["p50_ns"].as_u64().expect("p50");
    assert!(
        again
            .lines()
            .any(|l| l.split_whitespace().eq(["p50", &p50.to_string(), "ns"])),
        "{again}"
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(json["schema"], 2, "{json}");
    assert_eq!(json["command"], "latency", "{json}");
    check_latency(&json, channel, 32, 2000);
    if channel != "crossbeam" {
        assert!(
            json["rss_pong_kib"].as_u64().expect("pong rss") > 0,
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

/// iceoryx2 on services opened for four publishers, one active.
#[test]
fn latency_iceoryx2_mpsc() {
    latency_run("iceoryx2-mpsc", &[]);
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
    let json = read_json(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(json["command"], "throughput", "{json}");
    assert_eq!(json["channel"], channel, "{json}");
    assert_eq!(json["size"], size, "{json}");
    assert_eq!(json["messages"], 50000, "{json}");
    let mps = json["msgs_per_sec"].as_f64().expect("msgs_per_sec");
    assert!(mps > 0.0, "{json}");
    let bps = json["bytes_per_sec"].as_f64().expect("bytes_per_sec");
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

/// The tables of a compare run's stdout (after the progress lines).
fn tables(out: &str) -> &str {
    &out[out.find("Round trip").expect("tables")..]
}

/// Runs `compare` on `channels`, `messages` round trips each, its JSON
/// written to `json_path`, then the options `extra`; returns the stdout and
/// the JSON, and leaves the file.
fn compare_to(json_path: &Path, channels: &str, messages: &str, extra: &[&str]) -> (String, Value) {
    let mut args = vec![
        "compare",
        "--channels",
        channels,
        "--messages",
        messages,
        "--json",
        json_path.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    (out, read_json(json_path))
}

/// [`compare_to`] a temporary file `name`, removed once read.
#[cfg(feature = "conduit")]
fn compare(name: &str, channels: &str, messages: &str, extra: &[&str]) -> (String, Value) {
    let json_path = tmp(name);
    let r = compare_to(&json_path, channels, messages, extra);
    let _ = std::fs::remove_file(&json_path);
    r
}

/// [`compare`] of `channels` without throughput, 3000 round trips each:
/// the multicast tests' run.
#[cfg(feature = "conduit")]
fn compare_multicast(name: &str, channels: &str) -> (String, Value) {
    compare(name, channels, "3000", &["--no-throughput"])
}

/// A compare document's channel names, and its multicast pairs.
#[cfg(feature = "conduit")]
fn names_and_pairs(json: &Value) -> (Vec<&str>, &Vec<Value>) {
    let names = json["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["channel"].as_str().expect("name"))
        .collect();
    let pairs = json["multicast_vs_unicast"]
        .as_array()
        .expect("multicast_vs_unicast");
    (names, pairs)
}

/// Where the namespaces a multicast run needs cannot be made (`!possible`,
/// `why`), checks the run skipped all its channels, saying `skipped` in
/// its output, and returns true.
#[cfg(feature = "conduit")]
fn all_skipped(possible: bool, why: &str, out: &str, json: &Value, skipped: &str) -> bool {
    if possible {
        return false;
    }
    println!("SKIP: {why}; checking the skip instead");
    let (names, pairs) = names_and_pairs(json);
    assert!(names.is_empty() && pairs.is_empty(), "{json}");
    assert!(out.contains(skipped), "{out}");
    true
}

/// Checks a multicast pair of 3000 round trips each of 32 bytes.
#[cfg(feature = "conduit")]
fn check_pair(pair: &Value, multicast: &str, unicast: &str) {
    check_latency(&pair["multicast"], multicast, 32, 3000);
    check_latency(&pair["unicast"], unicast, 32, 3000);
}

/// Each of `rows` is in `out`.
#[cfg(feature = "conduit")]
fn check_rows(out: &str, rows: &[&str]) {
    for row in rows {
        assert!(out.contains(row), "no `{row}` in:\n{out}");
    }
}

#[test]
fn compare_writes_table_json_and_plot_and_reads_them_back() {
    let json_path = tmp("compare.json");
    let plot_path = tmp("compare.svg");
    let (out, json) = compare_to(
        &json_path,
        "crossbeam,udp-raw",
        "1000",
        &["--plot", plot_path.to_str().expect("utf-8")],
    );
    for row in [
        "limit #1",
        "crossbeam",
        "udp-raw",
        "limit #3",
        "One-way throughput",
        "1 MiB of slots",
    ] {
        assert!(out.contains(row), "no `{row}` in table:\n{out}");
    }
    let svg = std::fs::read_to_string(&plot_path).expect("plot written");
    assert_eq!(json["schema"], 2, "{json}");
    assert_eq!(json["command"], "compare", "{json}");
    // Three limit runs, two channels, one throughput row.
    assert_eq!(json["limits"].as_array().expect("limits").len(), 3);
    let channels = json["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 2, "{json}");
    for c in channels {
        check_latency(c, c["channel"].as_str().expect("name"), 32, 1000);
        assert!(c["p50_vs_limit"].as_f64().expect("ratio") > 0.0, "{c}");
        assert!(
            c["histogram"]
                .as_str()
                .is_some_and(|h| h.starts_with("HISTF")),
            "{c}"
        );
    }
    let tput = json["throughput"].as_array().expect("throughput");
    assert_eq!(tput.len(), 1, "{json}");
    assert_eq!(tput[0]["channel"], "crossbeam");
    assert!(json["peers"]["crossbeam"].as_str().is_some(), "{json}");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    assert!(
        svg.contains("udp-raw") && svg.contains("limit"),
        "legend missing"
    );

    // `report` prints the same tables and draws the same plot from the file.
    let replot = tmp("report.svg");
    let again = ok(&[
        "report",
        json_path.to_str().expect("utf-8"),
        "--plot",
        replot.to_str().expect("utf-8"),
    ]);
    assert_eq!(tables(&again), tables(&out));
    assert_eq!(std::fs::read_to_string(&replot).expect("replot"), svg);

    // `diff`: a run against itself passes; against a copy whose crossbeam
    // throughput took twice as long, it fails unless the threshold allows it.
    let p = json_path.to_str().expect("utf-8");
    let same = ok(&["diff", p, p]);
    assert!(same.contains("crossbeam 32 B msgs/s"), "{same}");
    assert!(same.contains("crossbeam p99 ns"), "{same}");
    let mut slower = json.clone();
    let elapsed = slower["throughput"][0]["elapsed_ns"]
        .as_u64()
        .expect("elapsed");
    slower["throughput"][0]["elapsed_ns"] = Value::from(elapsed * 2);
    let slower_path = tmp("slower.json");
    std::fs::write(&slower_path, slower.to_string()).expect("write");
    let q = slower_path.to_str().expect("utf-8");
    let err = fails(&["diff", p, q]);
    assert!(
        err.contains("worse") && err.contains("crossbeam 32 B msgs/s"),
        "{err}"
    );
    ok(&["diff", p, q, "--threshold", "150"]);
    // Faster is not worse.
    ok(&["diff", q, p]);

    for f in [&json_path, &plot_path, &replot, &slower_path] {
        let _ = std::fs::remove_file(f);
    }
}

/// `report` and `diff` refuse files they cannot read with a clear reason.
#[test]
fn report_refuses_other_files() {
    let old = tmp("v1.json");
    std::fs::write(
        &old,
        r#"{"results":[{"kind":"latency","channel":"limit"}]}"#,
    )
    .expect("write");
    let o = old.to_str().expect("utf-8");
    assert!(fails(&["report", o]).contains("schema"));
    assert!(fails(&["diff", o, o]).contains("schema"));
    let damaged = tmp("damaged.json");
    std::fs::write(
        &damaged,
        r#"{"schema":2,"command":"latency","channel":"limit","histogram":"AAAA"}"#,
    )
    .expect("write");
    assert!(
        fails(&["report", damaged.to_str().expect("utf-8")]).contains("not a conduit-bench run")
    );
    assert!(fails(&["report", "/nonexistent/run.json"]).contains("cannot read"));
    let _ = std::fs::remove_file(&old);
    let _ = std::fs::remove_file(&damaged);
}

/// conduit over UDP is also measured interleaved with the bare socket in
/// the same wait mode, in the same two processes; both halves are reported
/// side by side.
#[cfg(feature = "conduit")]
#[test]
fn compare_interleaves_udp_with_udp_raw() {
    let (out, json) = compare(
        "compare-udp.json",
        "udp-raw,udp,udp-raw-block,udp-block",
        "4000",
        &["--no-throughput"],
    );
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
    let pairs = json["udp_vs_raw"].as_array().expect("udp_vs_raw");
    assert_eq!(pairs.len(), 2, "{json}");
    for (channel, raw) in [("udp", "udp-raw"), ("udp-block", "udp-raw-block")] {
        let pair = pairs
            .iter()
            .find(|p| p["conduit"]["channel"] == channel)
            .unwrap_or_else(|| panic!("no {channel} pair: {json}"));
        assert_eq!(
            pair["raw"]["channel"], raw,
            "{channel} not against {raw}: {json}"
        );
        for key in ["p50_vs_udp_raw", "p99_vs_udp_raw"] {
            let v = pair[key].as_f64().expect(key);
            assert!(v.is_finite() && v > 0.0, "{key}: {json}");
        }
        assert!(
            pair["raw"]["p50_ns"].as_u64().expect("raw p50") > 0,
            "{json}"
        );
    }
}

/// `shm-mpsc` is also measured interleaved with `shm` in the same two
/// processes; the pair is printed next to the separate runs and saved.
#[cfg(feature = "conduit")]
#[test]
fn compare_interleaves_shm_mpsc_with_shm() {
    let (out, json) = compare(
        "compare-mpsc.json",
        "shm,shm-mpsc",
        "4000",
        &["--no-throughput"],
    );
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("shm-mpsc (a ring for 4 publishers"))
        .collect();
    for row in ["interleaved (", "separate runs"] {
        let line = table
            .iter()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no `{row}` row in the shm-mpsc table:\n{out}"));
        // p50, shm p50, ratio, p99, shm p99, ratio (after the label)
        let cols: Vec<f64> = line
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect();
        assert!(cols.len() >= 6, "{line}");
        let cols = &cols[cols.len() - 6..];
        for (t, shm, ratio) in [(cols[0], cols[1], cols[2]), (cols[3], cols[4], cols[5])] {
            assert!(t > 0.0 && shm > 0.0, "{line}");
            assert!((ratio - t / shm).abs() <= 0.0051, "{line}");
        }
    }
    let pairs = json["mpsc_vs_shm"].as_array().expect("mpsc_vs_shm");
    assert_eq!(pairs.len(), 1, "{json}");
    assert_eq!(pairs[0]["mpsc"]["channel"], "shm-mpsc", "{json}");
    assert_eq!(pairs[0]["shm"]["channel"], "shm", "{json}");
    // Half the pair's round trips each.
    assert_eq!(pairs[0]["mpsc"]["messages"], 4000, "{json}");
    let r = pairs[0]["p50_ratio"].as_f64().expect("p50_ratio");
    assert!(r.is_finite() && r > 0.0, "{json}");
}

/// `udp-aead` is interleaved with `udp-raw` like the other spinning UDP
/// channels, and its throughput row is judged against plain `udp`.
#[cfg(feature = "conduit")]
#[test]
fn compare_runs_udp_aead_against_udp_raw_and_udp() {
    let (out, json) = compare("compare-aead.json", "udp-raw,udp,udp-aead", "3000", &[]);
    let pair = json["udp_vs_raw"]
        .as_array()
        .expect("udp_vs_raw")
        .iter()
        .find(|p| p["conduit"]["channel"] == "udp-aead")
        .unwrap_or_else(|| panic!("no udp-aead pair: {json}"));
    assert_eq!(pair["raw"]["channel"], "udp-raw", "{json}");
    let row = out
        .lines()
        .skip_while(|l| !l.contains("One-way throughput"))
        .find(|l| l.starts_with("udp-aead "))
        .unwrap_or_else(|| panic!("no udp-aead throughput row:\n{out}"));
    assert!(row.contains("× udp"), "{row}");
    let t = json["throughput"]
        .as_array()
        .expect("throughput")
        .iter()
        .find(|t| t["channel"] == "udp-aead")
        .unwrap_or_else(|| panic!("no udp-aead throughput result: {json}"));
    assert_eq!(t["reference"], "udp", "{t}");
}

/// Whether this host lets us make a network namespace (root, `unshare`).
#[cfg(feature = "conduit")]
fn can_make_netns() -> bool {
    Command::new("unshare")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `udp-multicast` and `udp-netns` run in a private network namespace,
/// each against the limit runs and interleaved with each other; the
/// multicast table sets them against unicast, and `report` reads the run
/// back. Where no namespace can be made, both are skipped with a warning
/// and the run still succeeds.
#[cfg(feature = "conduit")]
#[test]
fn compare_runs_udp_multicast_against_unicast_in_a_namespace() {
    let json_path = tmp("compare-mcast.json");
    let plot_path = tmp("compare-mcast.svg");
    let p = json_path.to_str().expect("utf-8");
    let (out, json) = compare_to(
        &json_path,
        "udp,udp-multicast,udp-netns",
        "3000",
        &[
            "--no-throughput",
            "--plot",
            plot_path.to_str().expect("utf-8"),
        ],
    );
    let svg = std::fs::read_to_string(&plot_path).expect("plot written");
    let _ = std::fs::remove_file(&plot_path);
    let (names, pairs) = names_and_pairs(&json);
    if !can_make_netns() {
        println!("SKIP: no network namespace here; checking the skip instead");
        assert_eq!(names, ["udp"], "{json}");
        assert!(pairs.is_empty(), "{json}");
        assert!(
            out.contains("udp-multicast skipped: cannot make a private network namespace"),
            "{out}"
        );
        let _ = std::fs::remove_file(&json_path);
        return;
    }
    assert_eq!(names, ["udp", "udp-multicast", "udp-netns"], "{json}");
    assert!(
        svg.contains("udp-multicast (3k)") && svg.contains("udp-netns (3k)"),
        "legend missing"
    );
    assert_eq!(pairs.len(), 1, "{json}");
    let pair = &pairs[0];
    check_pair(pair, "udp-multicast", "udp-netns");
    for key in ["p50_ratio", "p99_ratio"] {
        let v = pair[key].as_f64().expect(key);
        assert!(v.is_finite() && v > 0.0, "{key}: {json}");
    }
    assert!(json["peers"]["udp-multicast"].as_str().is_some(), "{json}");
    for row in [
        "udp-multicast vs udp-netns, interleaved (3k each)",
        "udp-multicast vs udp-netns, separate runs",
        "udp-multicast vs udp, separate runs",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no `{row}` row:\n{out}"));
        // p50, unicast p50, ratio, p99, unicast p99, ratio
        let cols: Vec<f64> = line[row.len()..]
            .split_whitespace()
            .take(6)
            .map(|c| c.parse().expect("number"))
            .collect();
        assert_eq!(cols.len(), 6, "{line}");
        for (t, u, ratio) in [(cols[0], cols[1], cols[2]), (cols[3], cols[4], cols[5])] {
            assert!(t > 0.0 && u > 0.0, "{line}");
            assert!((ratio - t / u).abs() <= 0.0051, "{line}");
        }
    }
    let again = ok(&["report", p]);
    assert_eq!(tables(&again), tables(&out));
    let same = ok(&["diff", p, p]);
    assert!(same.contains("udp-multicast interleaved p50 ns"), "{same}");
    let _ = std::fs::remove_file(&json_path);
}

/// The veth channels run across a veth pair between two network
/// namespaces: conduit's multicast interleaved with its unicast control,
/// the bare sockets' floor interleaved the same way, each row against the
/// limit runs. Where the namespaces cannot be made, all four are skipped
/// with a warning and the run still succeeds.
#[cfg(feature = "conduit")]
#[test]
fn compare_runs_udp_multicast_veth_against_udp_veth_across_a_veth_pair() {
    let (out, json) = compare_multicast(
        "compare-veth.json",
        "udp-raw-veth,udp-raw-multicast-veth,udp-veth,udp-multicast-veth",
    );
    let (names, pairs) = names_and_pairs(&json);
    let veth = can_make_netns()
        && Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if all_skipped(
        veth,
        "no network namespace or no `ip` here",
        &out,
        &json,
        "udp-veth skipped: cannot make two network namespaces",
    ) {
        return;
    }
    assert_eq!(
        names,
        [
            "udp-raw-veth",
            "udp-raw-multicast-veth",
            "udp-veth",
            "udp-multicast-veth"
        ],
        "{json}"
    );
    assert_eq!(pairs.len(), 2, "{json}");
    check_pair(&pairs[0], "udp-raw-multicast-veth", "udp-raw-veth");
    check_pair(&pairs[1], "udp-multicast-veth", "udp-veth");
    for name in names {
        assert!(json["peers"][name].as_str().is_some(), "{name}: {json}");
    }
    check_rows(
        &out,
        &[
            "udp-raw-multicast-veth vs udp-raw-veth, interleaved (3k each)",
            "udp-multicast-veth vs udp-veth, interleaved (3k each)",
            "udp-multicast-veth vs udp-veth, separate runs",
            "udp-multicast-veth vs udp-raw-multicast-veth, separate runs",
        ],
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    refused(&[
        (&["latency", "--channel", "nope"], "unknown channel"),
        (
            &["latency", "--channel", "limit", "--size", "4"],
            "too small",
        ),
        (&["throughput", "--channel", "limit"], "no throughput test"),
        (&["latency"], "--channel"),
        (
            &["latency", "--channel", "crossbeam", "--size", "33"],
            "not supported",
        ),
    ]);
}

/// `mpsc`: every publisher heard from, shares that add up, a starvation
/// either absent or reported (a loaded host may starve one; the run says so
/// and fails, which is its job).
#[test]
fn mpsc_two_publishers() {
    let json = tmp("mpsc.json");
    let path = json.to_str().unwrap();
    let o = bench(&[
        "mpsc",
        "--publishers",
        "2",
        "--messages",
        "50k",
        "--json",
        path,
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || stderr.contains("starved"),
        "mpsc failed ({}): {stderr}",
        o.status
    );
    let j = read_json(&json);
    let _ = std::fs::remove_file(&json);
    assert_eq!(j["topology"], "mpsc");
    assert_eq!(j["publishers"], 2);
    common::check_shares(&j, 2);
    assert_eq!(
        o.status.success(),
        j["starved"].as_array().unwrap().is_empty(),
        "{j}"
    );
}

/// `fanout`: one row per subscriber count, with ordered percentiles, with
/// the rings' offers interleaved (the default) and one ring after another.
#[test]
fn fanout_one_and_two_subscribers() {
    for sequential in [false, true] {
        let json = tmp(&format!("fanout-{sequential}.json"));
        let path = json.to_str().unwrap();
        let mut args = vec![
            "fanout",
            "--subscribers",
            "1,2",
            "--messages",
            "300",
            "--json",
            path,
        ];
        if sequential {
            args.push("--sequential");
        }
        ok(&args);
        let j = read_json(&json);
        let _ = std::fs::remove_file(&json);
        assert_eq!(j["topology"], "fanout");
        assert_eq!(j["interleaved"], !sequential);
        let rows = j["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        for (row, s) in rows.iter().zip([1, 2]) {
            assert_eq!(row["subscribers"], s);
            let (p50, p99) = (
                row["offer_p50_ns"].as_u64().unwrap(),
                row["offer_p99_ns"].as_u64().unwrap(),
            );
            assert!(p50 > 0 && p50 <= p99, "{row}");
        }
    }
}

/// `udp-raw-multicast` runs in a private network namespace, against the
/// limit runs and interleaved with `udp-raw` in one namespace (the pair
/// listed first in `multicast_vs_unicast`); the multicast table prints the
/// pair, and `udp-multicast` against it. Where no namespace can be made,
/// it is skipped with a warning and the run still succeeds.
#[cfg(feature = "conduit")]
#[test]
fn compare_runs_udp_raw_multicast_against_udp_raw_in_a_namespace() {
    let (out, json) =
        compare_multicast("compare-raw-mcast.json", "udp-multicast,udp-raw-multicast");
    let (names, pairs) = names_and_pairs(&json);
    if all_skipped(
        can_make_netns(),
        "no network namespace here",
        &out,
        &json,
        "udp-raw-multicast skipped: cannot make a private network namespace",
    ) {
        return;
    }
    assert_eq!(names, ["udp-multicast", "udp-raw-multicast"], "{json}");
    // udp-netns is not listed: only the bare pair.
    assert_eq!(pairs.len(), 1, "{json}");
    check_pair(&pairs[0], "udp-raw-multicast", "udp-raw");
    assert!(
        json["peers"]["udp-raw-multicast"].as_str().is_some(),
        "{json}"
    );
    check_rows(
        &out,
        &[
            "udp-raw-multicast vs udp-raw, interleaved (3k each)",
            "udp-multicast vs udp-raw-multicast, separate runs",
        ],
    );
}
