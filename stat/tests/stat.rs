//! `conduit-stat` from outside: hostile and stale counters files, the
//! Prometheus exposition checked by the official Python parser, and real
//! streams between processes over `shm:` and UDP.
//! Every test uses a private shm directory (`--dir` and `CONDUIT_SHM_DIR`).
//!
//! This file has its own `main` (`harness = false`): run as
//! `stat --peer pub URI COUNT RATE` or `stat --peer sub URI`, it is the
//! publisher or subscriber process of the stream tests, printing its
//! handle's own counters as a JSON line every 50 ms; otherwise it runs the
//! tests whose names contain one of its arguments (all without one).

use conduit_counters::{build_file, FileHeader, Slot};
use conduit_test_util::{watchdog, TempDir};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const STAT: &str = env!("CARGO_BIN_EXE_conduit-stat");

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Runs conduit-stat on `dir` with `args`.
fn stat(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(STAT)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env("CONDUIT_SHM_DIR", dir)
        .output()
        .expect("run conduit-stat");
    assert!(
        out.status.success(),
        "conduit-stat {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `conduit-stat --json` with one read (no rates).
fn json(dir: &Path) -> Value {
    let out = stat(dir, &["--json", "--interval", "0"]);
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn stats_dir(dir: &Path) -> PathBuf {
    let d = dir.join("conduit-stats");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Makes a FIFO at `path` with mkfifo(1).
fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo {}", path.display());
}

/// Writes a counters file for `pid` with `slots`.
fn write_counters(dir: &Path, pid: u32, start_ns: u64, slots: &[Slot]) -> PathBuf {
    let header = FileHeader::new(pid, 8, start_ns, "synthetic");
    let path = stats_dir(dir).join(format!("{pid}.stats"));
    std::fs::write(&path, build_file(&header, slots)).unwrap();
    path
}

fn handles(v: &Value) -> &Vec<Value> {
    v["handles"].as_array().expect("handles")
}

fn find<'a>(v: &'a Value, channel: &str, role: &str) -> &'a Value {
    handles(v)
        .iter()
        .find(|h| h["channel"] == channel && h["role"] == role)
        .unwrap_or_else(|| panic!("no {role} of {channel} in {v:#}"))
}

fn garbage_counters_files_are_skipped_with_a_warning() {
    let _w = watchdog("garbage_counters_files_are_skipped_with_a_warning", 120);
    let tmp = TempDir::new("stat-garbage");
    let me = std::process::id();
    let mut good = Slot::new(1, 1, now_ns(), "shm:good?capacity=64k", "ring");
    good.counters.messages.set(42);
    write_counters(tmp.path(), me, now_ns(), &[good]);
    let sd = stats_dir(tmp.path());
    // Pseudo-random bytes, a truncated file, a huge slot count, a string
    // without NUL, an unknown version, an empty file, and a file whose
    // header names another pid.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(sd.join("1000001.stats"), &noise).unwrap();
    let valid = build_file(&FileHeader::new(1000002, 4, now_ns(), "t"), &[]);
    std::fs::write(sd.join("1000002.stats"), &valid[..100]).unwrap();
    let mut huge = valid.clone();
    huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(sd.join("1000003.stats"), &huge).unwrap();
    let mut unterminated = Slot::new(1, 1, 0, "shm:x", "ring");
    unterminated.uri.fill(b'a');
    let bad_string = build_file(&FileHeader::new(1000004, 1, 0, "t"), &[unterminated]);
    std::fs::write(sd.join("1000004.stats"), &bad_string).unwrap();
    let mut v9 = build_file(&FileHeader::new(1000005, 1, 0, "t"), &[]);
    v9[8..12].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(sd.join("1000005.stats"), &v9).unwrap();
    std::fs::write(sd.join("1000006.stats"), b"").unwrap();
    // A FIFO (opening it for reading would block) and symbolic links to an
    // endless device and to a directory.
    mkfifo(&sd.join("1000008.stats"));
    std::os::unix::fs::symlink("/dev/zero", sd.join("1000009.stats")).unwrap();
    std::os::unix::fs::symlink("/", sd.join("1000010.stats")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", tmp.path().join("zero")).unwrap();
    mkfifo(&tmp.path().join("fifo"));
    std::fs::write(
        sd.join("1000007.stats"),
        build_file(&FileHeader::new(1, 1, 0, "t"), &[]),
    )
    .unwrap();
    // Garbage in the shm directory itself, for `rings`.
    std::fs::write(tmp.path().join("junk"), &noise).unwrap();
    let mut ringish = b"CNDTRING".to_vec();
    ringish.extend_from_slice(&noise[..300]);
    std::fs::write(tmp.path().join("ringish"), &ringish).unwrap();

    let out = stat(tmp.path(), &["--json", "--interval", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    for pid in 1000001..=1000010 {
        assert!(err.contains(&format!("{pid}.stats")), "{pid}: {err}");
    }
    assert!(err.contains("warning"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(handles(&v).len(), 1, "{v:#}");
    assert_eq!(
        find(&v, "shm:good", "publication")["counters"]["messages"],
        42
    );
    assert_eq!(v["warnings"].as_array().unwrap().len(), 10);
    for args in [
        &["--once", "--interval", "0"][..],
        &["loss"],
        &["rings"],
        &["rings", "--json"],
        &["--once", "--interval", "0", "--sort", "lag"],
    ] {
        let out = stat(tmp.path(), args);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("warning"),
            "{args:?}"
        );
    }
}

fn a_dead_process_file_is_reported_dead_and_removed_by_clean() {
    let _w = watchdog(
        "a_dead_process_file_is_reported_dead_and_removed_by_clean",
        120,
    );
    let tmp = TempDir::new("stat-dead");
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = child.id();
    let file = write_counters(
        tmp.path(),
        pid,
        now_ns(),
        &[Slot::new(3, 1, now_ns(), "udp://127.0.0.1:9", "socket")],
    );
    let v = json(tmp.path());
    assert_eq!(v["processes"][0]["alive"], true, "{v:#}");
    child.kill().unwrap();
    child.wait().unwrap();
    let v = json(tmp.path());
    assert_eq!(v["processes"][0]["alive"], false, "{v:#}");
    assert_eq!(find(&v, "udp://127.0.0.1:9", "publication")["alive"], false);
    let table = String::from_utf8(stat(tmp.path(), &["--once", "--interval", "0"]).stdout).unwrap();
    assert!(table.contains("dead"), "{table}");
    let rings = String::from_utf8(stat(tmp.path(), &["rings"]).stdout).unwrap();
    assert!(rings.contains(&format!("dead process {pid}")), "{rings}");
    assert!(file.exists());
    stat(tmp.path(), &["rings", "--clean"]);
    assert!(!file.exists(), "--clean removes the dead process's file");
    // A real publisher killed with SIGKILL: its counters file and its ring
    // are reported dead and stale, and --clean removes both.
    let name = format!("stat-dead-{}", std::process::id());
    let uri = format!("shm:{name}?capacity=64k");
    let mut sub = Peer::spawn(tmp.path(), &["sub", &uri]);
    let mut publ = Peer::spawn(tmp.path(), &["pub", &uri, "100", "0"]);
    let chan = format!("shm:{name}");
    eventually(
        tmp.path(),
        &mut [&mut publ, &mut sub],
        "stream done",
        |v, own| {
            own[1]["received"] == 100
                && handles(v)
                    .iter()
                    .any(|h| h["channel"] == chan.as_str() && h["role"] == "publication")
        },
    );
    let pub_pid = publ.child.id();
    drop(publ); // SIGKILL
    let v = json(tmp.path());
    let p = find(&v, &chan, "publication");
    assert_eq!(p["alive"], false, "{p:#}");
    assert_eq!(find(&v, &chan, "subscription")["alive"], true);
    let rings: Value =
        serde_json::from_slice(&stat(tmp.path(), &["rings", "--json"]).stdout).unwrap();
    let ring = rings["rings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{rings:#}"));
    assert_eq!(ring["stale"], true, "{ring:#}");
    assert_eq!(ring["publisher_alive"], false, "{ring:#}");
    let pub_file = tmp.path().join(format!("conduit-stats/{pub_pid}.stats"));
    assert!(pub_file.exists());
    let out = String::from_utf8(stat(tmp.path(), &["rings", "--clean"]).stdout).unwrap();
    assert!(!pub_file.exists(), "{out}");
    assert!(
        !tmp.path().join(&name).exists(),
        "the stale ring is removed: {out}"
    );
    let v = json(tmp.path());
    assert_eq!(find(&v, &chan, "subscription")["pid"], sub.child.id());
    assert!(
        handles(&v).iter().all(|h| h["role"] != "publication"),
        "{v:#}"
    );
    // The live mode removes a dead process's file after --grace seconds.
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let dead = write_counters(tmp.path(), child.id(), now_ns(), &[]);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut live = Command::new(STAT)
        .arg("--dir")
        .arg(tmp.path())
        .args(["--interval", "100", "--grace", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if !dead.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = live.kill();
    let _ = live.wait();
    assert!(
        !dead.exists(),
        "the live mode removes it after the grace period"
    );
    // Nothing is removed through a symbolic link planted as the stats directory.
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let elsewhere = TempDir::new("stat-dead-elsewhere");
    let target = write_counters(elsewhere.path(), child.id(), now_ns(), &[]);
    child.kill().unwrap();
    child.wait().unwrap();
    let planted = TempDir::new("stat-dead-planted");
    std::os::unix::fs::symlink(
        elsewhere.path().join("conduit-stats"),
        planted.path().join("conduit-stats"),
    )
    .unwrap();
    let out = stat(planted.path(), &["rings", "--clean"]);
    assert!(target.exists(), "removed through a link");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not removing"));
    // A live process's file stays.

    let mine = write_counters(tmp.path(), std::process::id(), now_ns(), &[]);
    stat(tmp.path(), &["rings", "--clean"]);
    stat(tmp.path(), &["--once", "--interval", "0", "--clean"]);
    assert!(mine.exists());
}

/// A Python with the official `prometheus_client` package, if any.
fn python_with_prometheus_client() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args([
                "-c",
                "import prometheus_client.parser, prometheus_client.openmetrics.parser",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Parses `text` with both official parsers (Prometheus text format and the
/// stricter OpenMetrics one); returns the samples as `[name, labels, value]`.
fn parse_with_python(py: &str, text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    const SCRIPT: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
text = sys.stdin.read()
a = [[s.name, s.labels, s.value] for f in prom(text) for s in f.samples]
b = [[s.name, s.labels, s.value] for f in om(text) for s in f.samples]
assert len(a) == len(b), (len(a), len(b))
print(json.dumps(a))
"#;
    let mut child = Command::new(py)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    v
}

/// A `conduit-stat --prometheus 127.0.0.1:0` server, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(STAT)
            .arg("--dir")
            .arg(dir)
            .args(["--prometheus", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("serving http://")
            .and_then(|l| l.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    fn get(&self, path: &str) -> (String, String) {
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
        (head.to_owned(), body.to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sample(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    h: &Value,
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.get("channel") == Some(&h["channel"])
                && l.get("role") == Some(&h["role"])
                && l.get("pid").and_then(Value::as_str) == Some(&h["pid"].to_string())
                && l.get("slot").and_then(Value::as_str) == Some(&h["slot"].to_string())
        })
        .map(|s| s.2)
}

/// Checks the main counters of every handle of `v` against `/metrics`.
/// With `live` (real handles), the RTT (a fresh measurement with each
/// status exchange), the positions and the lag (a UDP stream's keep moving a
/// little after its last message) are not compared.
fn check_metrics_match_json(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    v: &Value,
    live: bool,
) {
    assert!(!handles(v).is_empty());
    for h in handles(v) {
        let c = &h["counters"];
        let n = |k: &str| c[k].as_u64().unwrap() as f64;
        let is_pub = h["role"] == "publication";
        let (msgs, bytes) = if is_pub {
            ("conduit_messages_sent_total", "conduit_sent_bytes_total")
        } else {
            (
                "conduit_messages_received_total",
                "conduit_received_bytes_total",
            )
        };
        assert_eq!(sample(samples, msgs, h), Some(n("messages")), "{h:#}");
        assert_eq!(sample(samples, bytes, h), Some(n("bytes")), "{h:#}");
        let pos = sample(samples, "conduit_position_bytes", h).expect("position");
        if !live {
            assert_eq!(pos, n("position"));
        }
        if h["transport"] == "udp" {
            let (naks, field) = if is_pub {
                ("conduit_naks_received_total", "naks_received")
            } else {
                ("conduit_naks_sent_total", "naks_sent")
            };
            assert_eq!(sample(samples, naks, h), Some(n(field)), "{h:#}");
            if !live {
                assert_eq!(
                    sample(samples, "conduit_rtt_seconds", h),
                    Some(n("rtt_ns") / 1e9)
                );
            }
        }
        if let Some(lag) = h["lag_bytes"].as_u64().filter(|_| !live) {
            assert_eq!(sample(samples, "conduit_lag_bytes", h), Some(lag as f64));
        }
        for (reason, count) in h["drops"].as_object().unwrap() {
            let found = samples.iter().any(|(name, l, val)| {
                name == "conduit_drops_total"
                    && l.get("reason").and_then(Value::as_str) == Some(reason)
                    && l.get("channel") == Some(&h["channel"])
                    && *val == count.as_u64().unwrap() as f64
            });
            assert!(found, "drop {reason} of {h:#}");
        }
    }
}

fn metrics_parse_with_the_official_parser_and_match_the_json() {
    let _w = watchdog(
        "metrics_parse_with_the_official_parser_and_match_the_json",
        120,
    );
    let Some(py) = python_with_prometheus_client() else {
        assert!(
            !conduit_test_util::in_ci(),
            "python3-prometheus-client is missing in CI"
        );
        println!("SKIPPED: no python3 with prometheus_client (apt-get install python3-prometheus-client)");
        return;
    };
    let tmp = TempDir::new("stat-prom");
    let t = now_ns();
    let mut p = Slot::new(3, 1, t, "udp://127.0.0.1:7000?driver=socket", "socket");
    let c = &mut p.counters;
    c.messages.set(1000);
    c.bytes.set(64_000);
    c.position.set(80_000);
    c.peer_position.set(70_000);
    c.sessions.set(1);
    c.naks_received.set(3);
    c.retransmits.set(5);
    c.rtt_ns.set(250_000);
    c.heartbeat_unix_ns.set(t);
    let mut s = Slot::new(4, 7, t, "udp://0.0.0.0:7000", "uring");
    let c = &mut s.counters;
    c.messages.set(900);
    c.bytes.set(57_600);
    c.position.set(72_000);
    c.peer_position.set(80_000);
    c.naks_sent.set(3);
    c.gaps_detected.set(4);
    c.gaps_repaired.set(3);
    c.gaps_unrecoverable.set(1);
    c.last_gap_unix_ns.set(t - 1_000_000_000);
    c.last_unrecoverable_unix_ns.set(t - 500_000_000);
    c.drops_total.set(9);
    c.drops[5].set(7); // out_of_window
    c.drops[6].set(2); // duplicate
    c.rtt_ns.set(300_000);
    c.heartbeat_unix_ns.set(t);
    let mut sp = Slot::new(1, 1, t, "shm:quotes \"eu\"\\x", "ring");
    sp.counters.messages.set(5);
    sp.counters.subscriber_slots_in_use.set(1);
    write_counters(tmp.path(), std::process::id(), t, &[p, s, sp]);

    let server = Server::start(tmp.path());
    let (head, text) = server.get("/metrics");
    assert!(head.contains("200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let samples = parse_with_python(py, &text);
    let v = json(tmp.path());
    check_metrics_match_json(&samples, &v, false);
    let sub = find(&v, "udp://0.0.0.0:7000", "subscription");
    assert_eq!(sub["lag_bytes"], 8000, "{sub:#}");
    assert_eq!(
        sample(&samples, "conduit_gaps_unrecoverable_total", sub),
        Some(1.0)
    );
    let (head, _) = server.get("/nothing");
    assert!(head.contains("404"), "{head}");
    // The loss report shows the same gaps.
    let loss = String::from_utf8(stat(tmp.path(), &["loss"]).stdout).unwrap();
    let row = loss
        .lines()
        .find(|l| l.starts_with("udp://0.0.0.0:7000"))
        .unwrap_or_else(|| panic!("{loss}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[1..7],
        &["sub", &std::process::id().to_string(), "4", "3", "3", "1"],
        "{loss}"
    );
}

// ---- Real streams between processes ----------------------------------------

/// A peer process (this binary with `--peer`), killed on drop; its stdout
/// lines arrive on `lines`.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    last: Option<Value>,
}

fn peer_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

impl Peer {
    fn spawn(dir: &Path, args: &[&str]) -> Peer {
        let mut child = Command::new(peer_exe())
            .arg("--peer")
            .args(args)
            .env("CONDUIT_SHM_DIR", dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", peer_exe().display()));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            lines,
            last: None,
        }
    }

    /// The latest counters the peer printed (its handle's own `counters()`),
    /// waiting for one if none came yet.
    fn counters(&mut self) -> Value {
        while let Ok(l) = self.lines.try_recv() {
            self.last = Some(serde_json::from_str(&l).expect("peer JSON"));
        }
        while self.last.is_none() {
            let l = self.lines.recv().expect("peer exited");
            self.last = Some(serde_json::from_str(&l).expect("peer JSON"));
        }
        self.last.clone().unwrap()
    }

    /// Sends `sig` (`STOP`, `CONT`) with kill(1).
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pred` holds for conduit-stat's view and the peers' own
/// counters, reading both again between tries (a bounded number of times).
fn eventually(
    dir: &Path,
    peers: &mut [&mut Peer],
    what: &str,
    pred: impl Fn(&Value, &[Value]) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let own: Vec<Value> = peers.iter_mut().map(|p| p.counters()).collect();
        last = json(dir);
        if pred(&last, &own) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: never held; last snapshot {last:#}");
}

fn stream_counters_agree(
    uri_pub: &str,
    uri_sub: &str,
    channel_pub: &str,
    channel_sub: &str,
    tag: &str,
) {
    let tmp = TempDir::new(tag);
    let n = "20000";
    let mut sub = Peer::spawn(tmp.path(), &["sub", uri_sub]);
    let mut publ = Peer::spawn(tmp.path(), &["pub", uri_pub, n, "0"]);
    // Both ends listed, each agreeing with the handle's own counters once
    // the stream is quiet (the counters move only while messages flow).
    let v = eventually(
        tmp.path(),
        &mut [&mut publ, &mut sub],
        "both ends at 20000",
        |v, own| {
            let (Some(p), Some(s)) = (
                handles(v)
                    .iter()
                    .find(|h| h["channel"] == channel_pub && h["role"] == "publication"),
                handles(v)
                    .iter()
                    .find(|h| h["channel"] == channel_sub && h["role"] == "subscription"),
            ) else {
                return false;
            };
            own[0]["sent"] == 20000
                && own[1]["received"] == 20000
                && p["counters"]["messages"] == own[0]["sent"]
                && s["counters"]["messages"] == own[1]["received"]
                && p["counters"]["naks_received"] == own[0]["naks_received"]
                && s["counters"]["naks_sent"] == own[1]["naks_sent"]
        },
    );
    let p = find(&v, channel_pub, "publication");
    let s = find(&v, channel_sub, "subscription");
    assert_eq!(p["pid"], publ.child.id());
    assert_eq!(s["pid"], sub.child.id());
    assert_eq!(p["alive"], true);
    assert_eq!(
        s["lag_bytes"], 0,
        "a caught-up subscriber has no lag: {s:#}"
    );
    // /metrics agrees with the JSON.
    if let Some(py) = python_with_prometheus_client() {
        let server = Server::start(tmp.path());
        let samples = parse_with_python(py, &server.get("/metrics").1);
        check_metrics_match_json(&samples, &json(tmp.path()), true);
    }
    // The table lists both ends.
    let out = stat(tmp.path(), &["--once", "--interval", "200"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains(channel_pub), "{table}");
    assert!(table.contains(channel_sub), "{table}");
}

fn shm_stream_both_ends_listed_and_agreeing() {
    let _w = watchdog("shm_stream_both_ends_listed_and_agreeing", 300);
    let name = format!("stat-shm-{}", std::process::id());
    let uri = format!("shm:{name}?capacity=1m");
    let chan = format!("shm:{name}");
    stream_counters_agree(&uri, &uri, &chan, &chan, "stat-shm");
}

fn udp_stream_both_ends_listed_and_agreeing() {
    let _w = watchdog("udp_stream_both_ends_listed_and_agreeing", 300);
    let port = conduit_test_util::free_udp_port();
    let uri = format!("udp://127.0.0.1:{port}");
    stream_counters_agree(&uri, &uri, &uri, &uri, "stat-udp");
}

fn a_stopped_subscriber_lags_more_then_catches_up() {
    let _w = watchdog("a_stopped_subscriber_lags_more_then_catches_up", 300);
    let tmp = TempDir::new("stat-lag");
    let name = format!("stat-lag-{}", std::process::id());
    let uri = format!("shm:{name}?capacity=4m");
    let chan = format!("shm:{name}");
    let mut sub = Peer::spawn(tmp.path(), &["sub", &uri]);
    // Unbounded, at about 2000 messages of 256 bytes per second: 4 MiB
    // take about 8 seconds to fill.
    let mut publ = Peer::spawn(tmp.path(), &["pub", &uri, "0", "2000"]);
    eventually(
        tmp.path(),
        &mut [&mut publ, &mut sub],
        "stream running",
        |_, own| own[1]["received"].as_u64().unwrap_or(0) > 100,
    );
    sub.signal("STOP");
    let lag = |v: &Value| {
        find(v, &chan, "subscription")["lag_bytes"]
            .as_u64()
            .unwrap()
    };
    let first = lag(&json(tmp.path()));
    let grown = eventually(tmp.path(), &mut [], "lag grows", |v, _| {
        // Past the default --slow-bytes (256 KiB).
        lag(v) > (first + 64 * 1024).max(512 * 1024)
    });
    let big = lag(&grown);
    let s = find(&grown, &chan, "subscription");
    assert_eq!(s["slow"], true, "{s:#}");
    // The table sorted by lag shows the slow subscriber first.
    let table = String::from_utf8(
        stat(
            tmp.path(),
            &["--once", "--interval", "200", "--sort", "lag"],
        )
        .stdout,
    )
    .unwrap();
    let first_row = table.lines().nth(2).unwrap_or("");
    assert!(
        first_row.contains("sub") && first_row.contains("SLOW"),
        "{table}"
    );
    // The ring shows it too.
    let rings: Value =
        serde_json::from_slice(&stat(tmp.path(), &["rings", "--json"]).stdout).unwrap();
    let ring = rings["rings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{rings:#}"));
    assert!(
        ring["subscribers"][0]["lag_bytes"].as_u64().unwrap() >= big,
        "{ring:#}"
    );
    sub.signal("CONT");
    eventually(tmp.path(), &mut [], "lag shrinks", |v, _| lag(v) < big / 2);
}

// ---- The peer process -------------------------------------------------------

fn print(c: &conduit::Counters) {
    let line = serde_json::json!({
        "sent": c.sent,
        "received": c.received,
        "naks_sent": c.naks_sent,
        "naks_received": c.naks_received,
        "retransmitted": c.retransmitted,
        "dropped": c.dropped,
    });
    let mut out = std::io::stdout().lock();
    // The reader went away: nothing left to do.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn peer_main(args: &[String]) -> Result<(), conduit::Error> {
    let usage = "usage: stat --peer pub URI COUNT RATE | stat --peer sub URI";
    let (Some(role), Some(uri)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let report_every = Duration::from_millis(50);
    let mut next_report = Instant::now();
    match role.as_str() {
        "pub" => {
            let count: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
            let rate: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
            let mut p = conduit::Publication::open(uri)?;
            let payload = [7u8; 256];
            let start = Instant::now();
            let mut sent = 0u64;
            loop {
                let due = if rate == 0 {
                    u64::MAX
                } else {
                    (start.elapsed().as_secs_f64() * rate as f64) as u64
                };
                if (count == 0 || sent < count) && sent < due {
                    match p.offer(1, &payload) {
                        Ok(_) => sent += 1,
                        Err(conduit::Error::BackPressured | conduit::Error::NotConnected) => {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    // Idle or paced: keep the protocol (and the counters) moving.
                    let _ = p.is_connected();
                    std::thread::sleep(Duration::from_micros(500));
                }
                if Instant::now() >= next_report {
                    next_report += report_every;
                    let _ = p.is_connected();
                    print(&p.counters());
                }
            }
        }
        "sub" => {
            let mut s = conduit::Subscription::open(uri)?;
            loop {
                match s.poll_timeout(|_| {}, 256, Duration::from_millis(5)) {
                    Ok(_) => {}
                    Err(e) => eprintln!("stat peer: poll: {e}"),
                }
                if Instant::now() >= next_report {
                    next_report += report_every;
                    let _ = s.is_connected();
                    print(&s.counters());
                }
            }
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

// ---- The harness ------------------------------------------------------------

const TESTS: &[(&str, fn())] = &[
    (
        "garbage_counters_files_are_skipped_with_a_warning",
        garbage_counters_files_are_skipped_with_a_warning,
    ),
    (
        "a_dead_process_file_is_reported_dead_and_removed_by_clean",
        a_dead_process_file_is_reported_dead_and_removed_by_clean,
    ),
    (
        "metrics_parse_with_the_official_parser_and_match_the_json",
        metrics_parse_with_the_official_parser_and_match_the_json,
    ),
    (
        "shm_stream_both_ends_listed_and_agreeing",
        shm_stream_both_ends_listed_and_agreeing,
    ),
    (
        "udp_stream_both_ends_listed_and_agreeing",
        udp_stream_both_ends_listed_and_agreeing,
    ),
    (
        "a_stopped_subscriber_lags_more_then_catches_up",
        a_stopped_subscriber_lags_more_then_catches_up,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--peer") {
        if let Err(e) = peer_main(&args[1..]) {
            eprintln!("stat peer: {e}");
            std::process::exit(1);
        }
        return;
    }
    // libtest's options that take a value; the other `--` options are ignored.
    const WITH_VALUE: &[&str] = &[
        "--test-threads",
        "--color",
        "--format",
        "--logfile",
        "--skip",
        "-Z",
    ];
    let mut filters = Vec::new();
    let mut it = args.iter();
    let mut list = false;
    while let Some(a) = it.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            it.next();
        } else if a == "--list" {
            list = true;
        } else if !a.starts_with('-') {
            filters.push(a.clone());
        }
    }
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    println!("\nrunning {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        println!("test {name} ...");
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        std::process::exit(1);
    }
}
