//! `conduit-stat`: every conduit channel of this host, seen from outside the
//! processes, through the per-process counters files
//! (`$CONDUIT_SHM_DIR/conduit-stats/<pid>.stats`) and the ring files.
//!
//! ```text
//! conduit-stat                      live table, refreshed every second
//! conduit-stat --once               one table (rates over --interval) and exit
//! conduit-stat --json               one snapshot as JSON
//! conduit-stat --prometheus ADDR    serve /metrics
//! conduit-stat rings [--clean]      ring files: header, subscriber slots, stale files
//! conduit-stat loss                 UDP loss report
//! ```
//!
//! Everything it reads is untrusted: a malformed file is skipped with a
//! warning on stderr. See docs/observability.md.
#![forbid(unsafe_code)]

mod fmt;
mod model;
mod procs;
mod prom;
mod rings;
mod source;
mod table;

use clap::{Parser, Subcommand};
use model::{SlowRule, Snapshot};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every conduit channel on this host, from outside the processes.
#[derive(Debug, Parser)]
#[command(name = "conduit-stat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print one table and exit (rates over --interval).
    #[arg(long)]
    once: bool,
    /// Print one snapshot as JSON and exit (rates over --interval; 0: one read, no rates).
    #[arg(long, conflicts_with = "once")]
    json: bool,
    /// Serve /metrics in the Prometheus (OpenMetrics) text format on ADDR (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["once", "json"])]
    prometheus: Option<String>,
    /// Refresh period of the live table, and the sampling window of rates, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    interval: u64,
    /// Row order.
    #[arg(long, value_enum, default_value_t = table::SortBy::Name)]
    sort: table::SortBy,
    /// A subscription at least this many bytes behind is slow.
    #[arg(long, default_value_t = SlowRule::default().bytes, value_name = "BYTES")]
    slow_bytes: u64,
    /// A subscription at least this many milliseconds behind is slow.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    slow_ms: u64,
    /// Live mode: remove the counters file of a dead process after it has
    /// been seen dead for this many seconds (0: never).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    grace: u64,
    /// Remove the counters files of dead processes first.
    #[arg(long)]
    clean: bool,
    /// The shm directory (default: $CONDUIT_SHM_DIR, else /dev/shm).
    #[arg(long, value_name = "DIR", global = true)]
    dir: Option<PathBuf>,
    /// No ANSI colours (default when stdout is not a terminal).
    #[arg(long)]
    no_color: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The ring files of the shm directory: header, subscriber slots and
    /// positions, stale files of dead publishers.
    Rings {
        /// Remove stale rings (dead publisher), their lock files, orphan lock
        /// files, and the counters files of dead processes.
        #[arg(long)]
        clean: bool,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Loss report of the UDP channels: gaps detected, NAKed, repaired and
    /// unrecoverable, with the times of the last ones.
    Loss {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

fn warn(snap: &Snapshot) {
    for w in &snap.warnings {
        eprintln!("conduit-stat: warning: {w}");
    }
}

/// Two reads `interval` apart (one when it is zero), derived.
fn sample(stats: &Path, shm_dir: &Path, interval: Duration, rule: SlowRule) -> Snapshot {
    if interval.is_zero() {
        let mut s = model::load(stats, shm_dir);
        s.derive(None, rule);
        return s;
    }
    let first = model::load(stats, shm_dir);
    std::thread::sleep(interval);
    let mut s = model::load(stats, shm_dir);
    s.derive(Some(&first), rule);
    s
}

fn clean_dead(snap: &Snapshot) {
    let dead: Vec<_> = snap.dead_files().collect();
    for p in model::remove_dead(&dead) {
        println!("removed {}", p.display());
    }
}

fn main() {
    let cli = Cli::parse();
    let shm_dir = cli
        .dir
        .clone()
        .unwrap_or_else(|| conduit_ringbuf::ring_dir(None));
    let stats = conduit_counters::stats_dir(&shm_dir);
    let rule = SlowRule {
        bytes: cli.slow_bytes,
        seconds: cli.slow_ms as f64 / 1e3,
    };
    let interval = Duration::from_millis(cli.interval);
    let code = match cli.command {
        Some(Command::Rings { clean, json }) => {
            let snap = model::load(&stats, &shm_dir);
            let report = rings::scan(
                &shm_dir,
                &procs::Locks::read(),
                &snap.shm_publisher_positions(),
            );
            if json {
                let doc = serde_json::json!({
                    "schema": model::SCHEMA,
                    "dir": shm_dir,
                    "rings": report.rings,
                    "orphan_lock_files": report.orphan_lock_files,
                    "skipped": report.skipped,
                    "dead_counters_files": snap.dead_files().map(|p| &p.file).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                rings::print(&report);
                for p in snap.dead_files() {
                    println!(
                        "dead process {} ({}): counters file {}",
                        p.pid,
                        p.process_name,
                        p.file.display()
                    );
                }
            }
            warn(&snap);
            if clean {
                for p in rings::clean(&shm_dir, &report) {
                    println!("removed {}", p.display());
                }
                clean_dead(&snap);
            }
            0
        }
        Some(Command::Loss { json }) => {
            let mut snap = model::load(&stats, &shm_dir);
            snap.derive(None, rule);
            warn(&snap);
            if json {
                let udp: Vec<_> = snap
                    .handles
                    .iter()
                    .filter(|h| h.transport == "udp")
                    .collect();
                let doc = serde_json::json!({ "schema": model::SCHEMA, "taken_unix_ns": snap.taken_unix_ns, "handles": udp });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", table::render_loss(&snap));
            }
            0
        }
        None => run_main(&cli, &stats, &shm_dir, interval, rule),
    };
    std::process::exit(code);
}

fn run_main(cli: &Cli, stats: &Path, shm_dir: &Path, interval: Duration, rule: SlowRule) -> i32 {
    if cli.clean {
        clean_dead(&model::load(stats, shm_dir));
    }
    if let Some(addr) = &cli.prometheus {
        let read = |prev: Option<&Snapshot>| {
            let mut s = model::load(stats, shm_dir);
            s.derive(prev, rule);
            s
        };
        return match prom::serve(addr, read) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("conduit-stat: cannot serve on {addr}: {e}");
                2
            }
        };
    }
    if cli.json {
        let snap = sample(stats, shm_dir, interval, rule);
        warn(&snap);
        println!(
            "{}",
            serde_json::to_string_pretty(&snap).unwrap_or_default()
        );
        return 0;
    }
    let style = table::Style {
        color: !cli.no_color && std::io::stdout().is_terminal(),
    };
    if cli.once {
        let snap = sample(stats, shm_dir, interval, rule);
        warn(&snap);
        print!("{}", table::render(&snap, cli.sort, style));
        return 0;
    }
    live(
        cli,
        stats,
        shm_dir,
        interval.max(Duration::from_millis(100)),
        rule,
        style,
    )
}

/// The live table: redraws every `interval`; removes the files of processes
/// seen dead for `--grace` seconds.
fn live(
    cli: &Cli,
    stats: &Path,
    shm_dir: &Path,
    interval: Duration,
    rule: SlowRule,
    style: table::Style,
) -> i32 {
    let mut prev: Option<Snapshot> = None;
    let mut dead_since: std::collections::HashMap<PathBuf, Instant> = Default::default();
    loop {
        let mut snap = model::load(stats, shm_dir);
        snap.derive(prev.as_ref(), rule);
        let now = Instant::now();
        dead_since.retain(|f, _| snap.dead_files().any(|p| &p.file == f));
        for p in snap.dead_files() {
            dead_since.entry(p.file.clone()).or_insert(now);
        }
        if cli.grace > 0 {
            let expired: Vec<_> = snap
                .dead_files()
                .filter(|p| {
                    dead_since
                        .get(&p.file)
                        .is_some_and(|t| now.duration_since(*t).as_secs() >= cli.grace)
                })
                .collect();
            model::remove_dead(&expired);
        }
        let mut out = String::new();
        if style.color {
            out.push_str("\x1b[H\x1b[2J");
        }
        out.push_str(&table::render(&snap, cli.sort, style));
        for w in &snap.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return 0;
        }
        drop(stdout);
        prev = Some(snap);
        std::thread::sleep(interval);
    }
}
