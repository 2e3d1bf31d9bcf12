//! The live table (plain ANSI, like `top`) and the loss report.

use crate::fmt;
use crate::model::{Handle, Snapshot};
use std::fmt::Write as _;

/// Row order of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// By channel, publication first, then pid.
    Name,
    /// Slow subscribers first, then by lag (largest first).
    Lag,
    /// By message rate (largest first).
    Rate,
}

/// ANSI styling, off when the output is not a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Emit escape sequences.
    pub color: bool,
}

impl Style {
    fn paint(self, s: &str, code: &str) -> String {
        if self.color && !code.is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

fn rate(h: &Handle, f: impl Fn(&crate::model::Rates) -> f64) -> String {
    h.rates.as_ref().map_or("-".into(), |r| fmt::count(f(r)))
}

fn udp_rate(h: &Handle, f: impl Fn(&crate::model::Rates) -> f64) -> String {
    if h.transport == "udp" {
        rate(h, f)
    } else {
        "".into()
    }
}

/// Sorts the handles of `snap` for display.
pub fn sort(handles: &mut [&Handle], by: SortBy) {
    match by {
        SortBy::Name => {}
        SortBy::Lag => handles.sort_by(|a, b| {
            b.slow
                .cmp(&a.slow)
                .then(b.lag_bytes.unwrap_or(0).cmp(&a.lag_bytes.unwrap_or(0)))
        }),
        SortBy::Rate => handles.sort_by(|a, b| {
            let r = |h: &Handle| h.rates.as_ref().map_or(0.0, |r| r.messages_per_s);
            r(b).total_cmp(&r(a))
        }),
    }
}

/// Renders the table of `snap`.
pub fn render(snap: &Snapshot, by: SortBy, style: Style) -> String {
    let mut out = String::new();
    let dead = snap.processes.iter().filter(|p| !p.alive).count();
    let slow = snap.handles.iter().filter(|h| h.slow).count();
    let _ = writeln!(
        out,
        "conduit-stat  {}  {}  processes {} ({} dead)  handles {}  slow {}",
        fmt::unix_ns(snap.taken_unix_ns),
        snap.stats_dir.display(),
        snap.processes.len(),
        dead,
        snap.handles.len(),
        slow
    );
    let header = format!(
        "{:<32} {:<4} {:>7} {:<5} {:>8} {:>8} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:<6}",
        "CHANNEL",
        "ROLE",
        "PID",
        "STATE",
        "MSGS/S",
        "BYTES/S",
        "LAG",
        "LAG(T)",
        "BP/S",
        "DROPS",
        "NAKS/S",
        "RETX/S",
        "RTT",
        "DRIVER"
    );
    let _ = writeln!(out, "{}", style.paint(&header, "1"));
    let mut rows: Vec<&Handle> = snap.handles.iter().collect();
    sort(&mut rows, by);
    for h in rows {
        let mut chan = h.channel.clone();
        if chan.chars().count() > 32 {
            chan = chan.chars().take(31).collect::<String>() + "~";
        }
        let state = if !h.alive {
            "dead"
        } else if h.slow {
            "SLOW"
        } else if h.rates.as_ref().is_some_and(|r| r.messages_per_s == 0.0) {
            "idle"
        } else {
            "ok"
        };
        let line =
            format!(
            "{:<32} {:<4} {:>7} {:<5} {:>8} {:>8} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>7} {:<6}",
            chan,
            if h.role == "publication" { "pub" } else { "sub" },
            h.pid,
            state,
            rate(h, |r| r.messages_per_s),
            h.rates
                .as_ref()
                .map_or("-".into(), |r| fmt::bytes(r.bytes_per_s as u64)),
            h.lag_bytes.map_or("-".into(), fmt::bytes),
            h.lag_seconds.map_or("-".into(), fmt::secs),
            rate(h, |r| r.back_pressure_per_s),
            fmt::count(h.counters.drops_total as f64),
            udp_rate(h, |r| r.naks_sent_per_s + r.naks_received_per_s),
            udp_rate(h, |r| r.retransmits_per_s),
            if h.transport == "udp" && h.counters.rtt_ns > 0 {
                fmt::secs(h.counters.rtt_ns as f64 / 1e9)
            } else {
                "".into()
            },
            h.driver,
        );
        let code = if !h.alive {
            "2"
        } else if h.slow {
            "1;7;31"
        } else {
            ""
        };
        let _ = writeln!(out, "{}", style.paint(line.trim_end(), code));
    }
    if snap.handles.is_empty() {
        let _ = writeln!(out, "(no channels)");
    }
    out
}

/// Renders the loss report of the UDP handles of `snap`.
pub fn render_loss(snap: &Snapshot) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<32} {:<4} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:<24} {:<24}",
        "CHANNEL",
        "ROLE",
        "PID",
        "GAPS",
        "NAKED",
        "REPAIRED",
        "LOST",
        "RETX",
        "RETX_BYTES",
        "LAST_GAP",
        "LAST_LOSS"
    );
    let _ = writeln!(out, "{}", header.trim_end());
    let mut any = false;
    for h in snap.handles.iter().filter(|h| h.transport == "udp") {
        any = true;
        let c = &h.counters;
        let sub = h.role == "subscription";
        let line = format!(
            "{:<32} {:<4} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:<24} {:<24}",
            h.channel,
            if sub { "sub" } else { "pub" },
            h.pid,
            if sub {
                c.gaps_detected.to_string()
            } else {
                "".into()
            },
            if sub { c.naks_sent } else { c.naks_received },
            if sub {
                c.gaps_repaired.to_string()
            } else {
                "".into()
            },
            if sub {
                c.gaps_unrecoverable.to_string()
            } else {
                "".into()
            },
            if sub {
                "".into()
            } else {
                c.retransmits.to_string()
            },
            if sub {
                "".into()
            } else {
                c.retransmitted_bytes.to_string()
            },
            fmt::unix_ns(c.last_gap_unix_ns),
            fmt::unix_ns(c.last_unrecoverable_unix_ns),
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if !any {
        let _ = writeln!(out, "(no UDP channels)");
    }
    out
}
