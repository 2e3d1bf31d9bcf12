//! `mpsc` over iceoryx2, and `mpsc` runs that alternate channels.
//!
//! `mpsc --channels iceoryx2-mpsc`: the shape of conduit's `mpsc` topology
//! (see [`crate::topology`]) on iceoryx2's publish-subscribe. This process
//! creates one `ipc::Service` of `[u8]` opened for N publishers
//! (`max_publishers(N)`), one subscriber (`max_subscribers(1)`), history 0,
//! and busy-spins on `receive`; N publisher processes loan a slice, write
//! the message into it and send it, as fast as they can. Same message
//! (`[publisher u32][0 u32][seq u64][filler]`), same counting: the timed
//! window opens once every publisher has been heard from; total rate, each
//! publisher's share, the per-publisher order check, the starvation flag
//! (a publisher below 1/(2N) of the messages); and, for iceoryx2, the
//! messages each publisher lost (gaps in its sequence).
//!
//! Buffer: iceoryx2 gives each publisher its own queue to the subscriber;
//! each queue holds 1/N of the messages conduit's default 1 MiB ring holds
//! at this size ([`BUFFER_BYTES`] / the ring's record length), so both
//! channels have the same buffer in total.
//!
//! Modes ([`Iox2Mode`]), `--iceoryx2 MODE`; none loses a message but
//! `overflow`:
//! * `retry` (default): safe overflow off,
//!   `BackpressureStrategy::RetryUntilDelivered`: iceoryx2's own way not to
//!   lose messages, the closest to conduit's `slow=block`. A publisher
//!   whose queue is full waits inside `send` (iceoryx2's adaptive wait:
//!   `sched_yield` 10 000 times, then sleeps of 100 µs, then of 10 ms).
//! * `spin`: safe overflow off, `BackpressureStrategy::DiscardData`; a send
//!   that reached no subscriber (its queue was full) is loaned, written and
//!   sent again with the same sequence number, spinning as conduit's
//!   publishers spin on `BackPressured` (they never yield).
//! * `overflow`: safe overflow on (iceoryx2's default): a full queue drops
//!   its oldest message; the losses are counted and reported, not an error.
//!
//! The subscriber's `receive` takes the next message from the first
//! publisher's queue that has one, in connection order: publishers that
//! come later are served when the earlier queues are empty.
//!
//! `mpsc --channels shm-mpsc,iceoryx2-mpsc --rounds R` runs the channels
//! one after the other, R times (alternating), prints each run, then per
//! channel the median, min and max of the total rate, and the load
//! average before and after. The `shm-mpsc` runs are [`crate::topology::mpsc`]
//! itself (its JSON, read back).
//!
//! [`crate::topology::mpsc`] (built with the `conduit` feature only) uses
//! this module's message codec ([`encode`], [`decode`]), subscriber
//! bookkeeping ([`Tally`]) and report ([`MpscRun`]), so both channels are
//! counted, printed and written alike.

use std::time::{Duration, Instant};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use crate::channels::{unique_name, Channel, PeerArgs, BUFFER_BYTES};
use crate::cli::MpscArgs;
use crate::error::{BenchError, Result};
use crate::spawn::{announce, child_init, Peer, READY_TIMEOUT};

/// How long the subscriber may see nothing before the run is declared dead.
const IDLE: Duration = Duration::from_secs(30);

/// A channel of the `mpsc` topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpscChannel {
    /// conduit, `shm:NAME?publishers=N` ([`crate::topology::mpsc`]).
    Shm,
    /// iceoryx2 publish-subscribe with `max_publishers(N)`.
    Iceoryx2,
}

impl MpscChannel {
    /// Parses `shm-mpsc` (or `shm`) and `iceoryx2-mpsc` (or `iceoryx2`).
    ///
    /// # Errors
    /// Another name.
    pub fn parse(s: &str) -> Result<MpscChannel> {
        match s {
            "shm-mpsc" | "shm" => Ok(MpscChannel::Shm),
            "iceoryx2-mpsc" | "iceoryx2" => Ok(MpscChannel::Iceoryx2),
            _ => Err(BenchError(format!(
                "`{s}` is not an mpsc channel (shm-mpsc, iceoryx2-mpsc)"
            ))),
        }
    }

    /// The name printed and written to the JSON.
    pub fn name(self) -> &'static str {
        match self {
            MpscChannel::Shm => "shm-mpsc",
            MpscChannel::Iceoryx2 => "iceoryx2-mpsc",
        }
    }
}

/// What an iceoryx2 publisher does when the subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iox2Mode {
    /// No overflow; iceoryx2 retries inside `send` until delivered.
    Retry,
    /// No overflow; a send that reached nobody is sent again (spinning).
    Spin,
    /// Safe overflow: the oldest queued message is dropped.
    Overflow,
}

impl Iox2Mode {
    /// Parses `spin`, `retry`, `overflow`.
    ///
    /// # Errors
    /// Another name.
    pub fn parse(s: &str) -> Result<Iox2Mode> {
        match s {
            "spin" => Ok(Iox2Mode::Spin),
            "retry" => Ok(Iox2Mode::Retry),
            "overflow" => Ok(Iox2Mode::Overflow),
            _ => Err(BenchError(format!(
                "`{s}` is not an iceoryx2 mode (spin, retry, overflow)"
            ))),
        }
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Iox2Mode::Spin => "spin",
            Iox2Mode::Retry => "retry",
            Iox2Mode::Overflow => "overflow",
        }
    }

    /// Whether the service overflows (drops) instead of holding back.
    fn overflows(self) -> bool {
        self == Iox2Mode::Overflow
    }

    fn backpressure(self) -> BackpressureStrategy {
        match self {
            Iox2Mode::Retry => BackpressureStrategy::RetryUntilDelivered,
            Iox2Mode::Spin | Iox2Mode::Overflow => BackpressureStrategy::DiscardData,
        }
    }
}

/// Whether `mpsc` with these options is run here rather than by
/// [`crate::topology::mpsc`] alone (which it is for the default: one
/// `shm-mpsc` run).
pub fn wanted(a: &MpscArgs) -> bool {
    a.rounds != 1 || a.channels != [MpscChannel::Shm]
}

/// Messages conduit's default ring holds at `size` (a record is a 16-byte
/// header and the payload, rounded up to 32 bytes), and so the iceoryx2
/// run's buffer in total.
fn ring_messages(size: usize) -> usize {
    (BUFFER_BYTES / (16 + size).div_ceil(32).saturating_mul(32)).max(1)
}

/// Each iceoryx2 publisher's queue: an equal part of [`ring_messages`].
fn buffer_per_publisher(size: usize, publishers: u32) -> usize {
    (ring_messages(size) / publishers.max(1) as usize).max(1)
}

fn err(what: &str, e: impl std::fmt::Debug) -> BenchError {
    BenchError(format!("iceoryx2 {what}: {e:?}"))
}

/// Reads a message's publisher and sequence number (see [`encode`]).
pub(crate) fn decode(p: &[u8]) -> Result<(u32, u64)> {
    if p.len() < 16 {
        return Err(BenchError(format!("message of {} bytes", p.len())));
    }
    let id = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&p[8..16]);
    Ok((id, u64::from_le_bytes(seq)))
}

/// Writes the publisher `id` and the sequence number `seq` into a message
/// `[publisher u32][0 u32][seq u64]…` of 16 bytes or more.
pub(crate) fn encode(buf: &mut [u8], id: u32, seq: u64) {
    buf[..4].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
}

/// Writes `doc` to `path`, pretty-printed, and says so on stderr.
pub(crate) fn write_json(path: &str, doc: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| BenchError(format!("json: {e}")))?;
    std::fs::write(path, text).map_err(|e| BenchError(format!("cannot write {path}: {e}")))?;
    eprintln!("wrote {path}");
    Ok(())
}

/// `/proc/loadavg`'s first three fields (empty when unreadable).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

type Service = PortFactory<ipc::Service, [u8], ()>;

/// The iceoryx2 settings a run's processes share (the publishers get them
/// in `--param`).
#[derive(Debug, Clone, PartialEq)]
struct Iox2Setup {
    service: String,
    publishers: u32,
    buffer: usize,
    mode: Iox2Mode,
}

impl Iox2Setup {
    fn param(&self, id: u32) -> String {
        format!(
            "{} {} {} {} {id}",
            self.service,
            self.publishers,
            self.buffer,
            self.mode.name()
        )
    }

    /// Parses [`Iox2Setup::param`]: the setup and the publisher's index.
    fn from_param(p: &str) -> Result<(Iox2Setup, u32)> {
        let bad = || BenchError(format!("bad iceoryx2 mpsc parameter `{p}`"));
        let f: Vec<&str> = p.split(' ').collect();
        let [service, publishers, buffer, mode, id] = f[..] else {
            return Err(bad());
        };
        Ok((
            Iox2Setup {
                service: service.to_string(),
                publishers: publishers.parse().map_err(|_| bad())?,
                buffer: buffer.parse().map_err(|_| bad())?,
                mode: Iox2Mode::parse(mode)?,
            },
            id.parse().map_err(|_| bad())?,
        ))
    }

    /// Creates (the subscriber's process) or opens (a publisher's) the
    /// service, with the same settings on both sides.
    fn service(&self, node: &Node<ipc::Service>, create: bool) -> Result<Service> {
        let name = ServiceName::new(&self.service).map_err(|e| err("service name", e))?;
        let builder = node
            .service_builder(&name)
            .publish_subscribe::<[u8]>()
            .max_publishers(self.publishers as usize)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(self.buffer)
            .enable_safe_overflow(self.mode.overflows());
        if create {
            builder.create().map_err(|e| err("create service", e))
        } else {
            builder.open().map_err(|e| err("open service", e))
        }
    }
}

fn node() -> Result<Node<ipc::Service>> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| err("node", e))
}

/// One run of the topology, on either channel.
#[derive(Debug, Clone)]
pub(crate) struct MpscRun {
    channel: MpscChannel,
    publishers: u32,
    size: usize,
    /// Messages delivered in the timed window.
    timed: u64,
    elapsed: Duration,
    /// Per publisher: messages delivered in the window.
    counts: Vec<u64>,
    /// Per publisher: messages lost in the window (iceoryx2 only).
    gaps: Vec<u64>,
    /// iceoryx2 only: the mode and each publisher's queue.
    iox2: Option<(Iox2Mode, usize)>,
    /// Why the run failed after it was measured (starvation, loss).
    failure: Option<String>,
}

impl MpscRun {
    /// The run of `publishers` publishers of `size`-byte messages counted
    /// by `t` in a window of `elapsed`; `iox2`: iceoryx2's mode and queue.
    pub(crate) fn new(
        channel: MpscChannel,
        publishers: u32,
        size: usize,
        t: Tally,
        elapsed: Duration,
        iox2: Option<(Iox2Mode, usize)>,
    ) -> MpscRun {
        MpscRun {
            channel,
            publishers,
            size,
            timed: t.timed,
            elapsed,
            counts: t.counts,
            gaps: t.gaps,
            iox2,
            failure: None,
        }
    }

    fn total(&self) -> f64 {
        self.timed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn floor(&self) -> f64 {
        1.0 / (2.0 * f64::from(self.publishers.max(1)))
    }

    fn shares(&self) -> Vec<f64> {
        self.counts
            .iter()
            .map(|c| *c as f64 / self.timed.max(1) as f64)
            .collect()
    }

    /// The publishers below 1/(2N) of the messages.
    pub(crate) fn starved(&self) -> Vec<usize> {
        let floor = self.floor();
        (0..self.counts.len())
            .filter(|i| self.shares()[*i] < floor)
            .collect()
    }

    /// The run from [`crate::topology::mpsc`]'s JSON.
    #[cfg(feature = "conduit")]
    fn from_shm_json(doc: &serde_json::Value, failure: Option<String>) -> Result<MpscRun> {
        let bad = || BenchError(format!("unexpected mpsc JSON: {doc}"));
        let publishers = doc["publishers"].as_u64().ok_or_else(bad)? as u32;
        let timed = doc["timed_messages"].as_u64().ok_or_else(bad)?;
        let shares = doc["shares"].as_array().ok_or_else(bad)?;
        let counts = shares
            .iter()
            .map(|s| s.as_f64().map(|s| (s * timed as f64).round() as u64))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(bad)?;
        Ok(MpscRun {
            channel: MpscChannel::Shm,
            publishers,
            size: doc["size"].as_u64().ok_or_else(bad)? as usize,
            timed,
            elapsed: Duration::from_secs_f64(doc["elapsed_s"].as_f64().ok_or_else(bad)?),
            gaps: vec![0; counts.len()],
            counts,
            iox2: None,
            failure,
        })
    }

    /// Prints the run: the total rate, each publisher's share (and, for
    /// iceoryx2, its losses), the starvation requirement.
    pub(crate) fn print(&self) {
        let total = self.total();
        let floor = self.floor();
        let mode = match self.iox2 {
            Some((mode, buffer)) => format!(", mode {}, queue {buffer} per publisher", mode.name()),
            None => String::new(),
        };
        println!(
            "{}, {} publisher processes, {} B{mode}: {:.2} M msgs/s in total over {} messages ({:.2?})",
            self.channel.name(),
            self.publishers,
            self.size,
            total / 1e6,
            self.timed,
            self.elapsed
        );
        for (i, s) in self.shares().iter().enumerate() {
            let lost = match self.iox2 {
                Some(_) => format!(", {} lost", self.gaps[i]),
                None => String::new(),
            };
            println!(
                "  publisher {i}: {:>6.2} % of the messages ({:.2} M msgs/s{lost}){}",
                s * 100.0,
                s * total / 1e6,
                if *s < floor { "  STARVED" } else { "" }
            );
        }
        println!(
            "  requirement: every publisher >= 1/(2N) = {:.2} %: {}",
            floor * 100.0,
            if self.starved().is_empty() {
                "met"
            } else {
                "NOT MET (starvation)"
            }
        );
    }

    /// The run's JSON document.
    pub(crate) fn json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "schema": 2,
            "topology": "mpsc",
            "channel": self.channel.name(),
            "publishers": self.publishers,
            "size": self.size,
            "timed_messages": self.timed,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "msgs_per_sec": self.total(),
            "shares": self.shares(),
            "starved": self.starved(),
        });
        if let Some((mode, buffer)) = self.iox2 {
            doc["iceoryx2_mode"] = mode.name().into();
            doc["buffer_per_publisher"] = buffer.into();
            doc["lost"] = self.gaps.clone().into();
        }
        if let Some(f) = &self.failure {
            doc["failure"] = f.clone().into();
        }
        doc
    }
}

/// Runs `mpsc` for the channels and rounds of `a` (see the module docs).
///
/// # Errors
/// A run could not be made, or one failed (starvation, loss, disorder;
/// after every figure is printed).
pub fn run(a: &MpscArgs) -> Result<()> {
    if a.publishers == 0 || a.common.size < 16 || a.rounds == 0 || a.channels.is_empty() {
        return Err(BenchError::msg(
            "mpsc needs 1 or more publishers, --size 16 or more, 1 or more rounds and channels",
        ));
    }
    let load_before = load_average();
    let mut runs = Vec::new();
    for _ in 0..a.rounds {
        for &channel in &a.channels {
            let r = match channel {
                MpscChannel::Shm => shm_run(a)?,
                MpscChannel::Iceoryx2 => {
                    let r = iceoryx2_run(a.publishers, a.common.size, a.messages, a.iceoryx2)?;
                    r.print();
                    r
                }
            };
            if let Some(f) = &r.failure {
                println!("  FAILED: {f}");
            }
            runs.push(r);
        }
    }
    let load_after = load_average();
    let single = runs.len() == 1;
    let mut summary = Vec::new();
    if !single {
        println!(
            "mpsc, {} publishers, {} B, {} round(s) alternating; load average {load_before} before, {load_after} after:",
            a.publishers, a.common.size, a.rounds
        );
        println!("  channel          M msgs/s median   min – max         smallest share, median   failed runs");
        for &channel in &a.channels {
            let mine: Vec<&MpscRun> = runs.iter().filter(|r| r.channel == channel).collect();
            let mut rates: Vec<f64> = mine.iter().map(|r| r.total()).collect();
            rates.sort_by(f64::total_cmp);
            let mut least: Vec<f64> = mine
                .iter()
                .map(|r| r.shares().into_iter().fold(1.0, f64::min))
                .collect();
            least.sort_by(f64::total_cmp);
            let failed = mine.iter().filter(|r| r.failure.is_some()).count();
            let (median, min, max) = (median_of(&rates), rates[0], rates[rates.len() - 1]);
            println!(
                "  {:<15}  {:>15.2}   {:>6.2} – {:<6.2}   {:>22.1} %   {failed}/{}",
                channel.name(),
                median / 1e6,
                min / 1e6,
                max / 1e6,
                median_of(&least) * 100.0,
                mine.len()
            );
            summary.push(serde_json::json!({
                "channel": channel.name(),
                "msgs_per_sec_median": median,
                "msgs_per_sec_min": min,
                "msgs_per_sec_max": max,
                "smallest_share_median": median_of(&least),
                "failed_runs": failed,
                "runs": mine.len(),
            }));
        }
        if let (Some(s), Some(i)) = (
            summary.iter().find(|s| s["channel"] == "shm-mpsc"),
            summary.iter().find(|s| s["channel"] == "iceoryx2-mpsc"),
        ) {
            let ratio = i["msgs_per_sec_median"].as_f64().unwrap_or(0.0)
                / s["msgs_per_sec_median"].as_f64().unwrap_or(0.0).max(1e-9);
            println!("  iceoryx2-mpsc / shm-mpsc (medians): {ratio:.2} ×");
        }
    }
    if let Some(path) = &a.common.json {
        let doc = if single {
            runs[0].json()
        } else {
            serde_json::json!({
                "schema": 2,
                "topology": "mpsc",
                "publishers": a.publishers,
                "size": a.common.size,
                "rounds": a.rounds,
                "load_average_before": load_before,
                "load_average_after": load_after,
                "runs": runs.iter().map(MpscRun::json).collect::<Vec<_>>(),
                "summary": summary,
            })
        };
        write_json(path, &doc)?;
    }
    let failures: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{}: {f}", r.channel.name()))
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(BenchError(failures.join("; ")))
    }
}

/// The middle of sorted `v` (the mean of the two middles when even).
fn median_of(v: &[f64]) -> f64 {
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One `shm-mpsc` run: [`crate::topology::mpsc`] itself, which prints it;
/// its figures are read back from its JSON.
#[cfg(feature = "conduit")]
fn shm_run(a: &MpscArgs) -> Result<MpscRun> {
    let path = std::env::temp_dir().join(format!("{}.json", unique_name("mpsc-shm")));
    let text = path
        .to_str()
        .ok_or_else(|| BenchError::msg("temporary path is not UTF-8"))?
        .to_string();
    let r = crate::topology::mpsc(a.publishers, a.common.size, a.messages, Some(&text));
    let read = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    remove_own_mpsc_rings();
    let failure = match r {
        Ok(()) => None,
        // Starvation is reported after the JSON is written; anything else
        // left no figures.
        Err(e) if read.is_ok() => Some(e.to_string()),
        Err(e) => return Err(e),
    };
    let doc: serde_json::Value =
        serde_json::from_str(&read?).map_err(|e| BenchError(format!("mpsc JSON: {e}")))?;
    MpscRun::from_shm_json(&doc, failure)
}

/// Removes this process's `mpsc` ring files and their lock files:
/// [`crate::topology::mpsc`] kills its publishers, so none of them closes
/// the ring (which would remove them). Names are `cb-<pid>-<n>-mpsc`
/// ([`unique_name`]), so only this process's own are matched. `mpsc`
/// calls it once the publishers are gone; `shm_run` again, for a run
/// that failed before that.
#[cfg(feature = "conduit")]
pub(crate) fn remove_own_mpsc_rings() {
    let dir = std::env::var_os("CONDUIT_SHM_DIR").unwrap_or_else(|| "/dev/shm".into());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let prefix = format!("cb-{}-", std::process::id());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ring = name.strip_prefix('.').unwrap_or(name);
        let Some(rest) = ring.strip_prefix(&prefix) else {
            continue;
        };
        let Some((n, tail)) = rest.split_once('-') else {
            continue;
        };
        let lock = name.starts_with('.') && tail.starts_with("mpsc.") && tail.ends_with(".lock");
        if n.bytes().all(|b| b.is_ascii_digit()) && (tail == "mpsc" || lock) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(not(feature = "conduit"))]
fn shm_run(_: &MpscArgs) -> Result<MpscRun> {
    Err(crate::channels::without_conduit())
}

/// The subscriber's bookkeeping, for both channels: per publisher the
/// next sequence number, the messages delivered and lost in the timed
/// window; the window itself, and the checks made after each batch.
pub(crate) struct Tally {
    /// Whether a message after a gap is counted as lost (iceoryx2) rather
    /// than an error (conduit, which loses nothing).
    losses: bool,
    next: Vec<Option<u64>>,
    counts: Vec<u64>,
    gaps: Vec<u64>,
    seen: Vec<u64>,
    timing: Option<Instant>,
    /// Messages delivered in the timed window.
    pub(crate) timed: u64,
    failure: Option<BenchError>,
    started: Instant,
    idle_since: Option<Instant>,
}

impl Tally {
    /// The bookkeeping of `n` publishers, from now; with `losses`, a gap in
    /// a publisher's sequence is counted as lost messages, else an error.
    pub(crate) fn new(n: usize, losses: bool) -> Tally {
        Tally {
            losses,
            next: vec![None; n],
            counts: vec![0; n],
            gaps: vec![0; n],
            seen: vec![0; n],
            timing: None,
            timed: 0,
            failure: None,
            started: Instant::now(),
            idle_since: None,
        }
    }

    /// Accounts one delivered message. A sequence number below the
    /// expected one is an error (disorder, duplicate); above it, the
    /// messages in between were lost (an error without `losses`).
    pub(crate) fn take(&mut self, payload: &[u8]) {
        let (id, seq) = match decode(payload) {
            Ok(v) => v,
            Err(e) => {
                self.failure.get_or_insert(e);
                return;
            }
        };
        let i = id as usize;
        let Some(want) = self.next.get(i).copied() else {
            self.failure
                .get_or_insert(BenchError(format!("unknown publisher {id}")));
            return;
        };
        if let Some(w) = want {
            if seq < w || (seq > w && !self.losses) {
                self.failure.get_or_insert(BenchError(format!(
                    "publisher {id}: message {seq} where {w} was expected"
                )));
                return;
            }
            if self.timing.is_some() {
                self.gaps[i] += seq - w;
            }
        }
        self.next[i] = Some(seq + 1);
        self.seen[i] += 1;
        if self.timing.is_some() {
            self.counts[i] += 1;
            self.timed += 1;
        }
    }

    /// After a batch of `got` messages: fails on a bad message, opens the
    /// timed window once every publisher has been heard from, fails when a
    /// publisher stays silent for [`IDLE`] before that (starvation) or
    /// nothing arrives for [`IDLE`] (the error names `what`); spins a
    /// moment after an empty batch.
    ///
    /// # Errors
    /// As above.
    pub(crate) fn after_batch(&mut self, got: usize, what: &str) -> Result<()> {
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        // The window opens once every publisher has been heard from.
        if self.timing.is_none() && self.next.iter().all(Option::is_some) {
            self.timing = Some(Instant::now());
        }
        if self.timing.is_none() && self.started.elapsed() > IDLE {
            let silent: Vec<usize> = (0..self.next.len())
                .filter(|i| self.next[*i].is_none())
                .collect();
            return Err(BenchError(format!(
                "publishers {silent:?} sent nothing in {IDLE:?} while the others sent {:?} (starvation)",
                self.seen
            )));
        }
        if got == 0 {
            if self.idle_since.get_or_insert_with(Instant::now).elapsed() > IDLE {
                return Err(BenchError(format!("{what}: nothing arrived for {IDLE:?}")));
            }
            std::hint::spin_loop();
        } else {
            self.idle_since = None;
        }
        Ok(())
    }

    /// How long the timed window has been open (zero before it opens).
    pub(crate) fn window(&self) -> Duration {
        self.timing.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Starts `publishers` `__mpsc-send` peer processes of `channel` sending
/// `size`-byte messages, publisher `id` with the parameter `param(id)`, and
/// waits until each is ready.
///
/// # Errors
/// A peer could not start or failed before it was ready.
pub(crate) fn spawn_publishers(
    channel: Channel,
    size: usize,
    publishers: u32,
    param: impl Fn(u32) -> String,
) -> Result<Vec<Peer>> {
    let mut peers = Vec::new();
    for id in 0..publishers {
        let args = PeerArgs {
            channel,
            size,
            count: 0,
            param: param(id),
            cpu: None,
            parent: std::process::id(),
        };
        let mut peer = Peer::spawn("__mpsc-send", &args.to_args())?;
        peer.expect("READY", READY_TIMEOUT)?;
        peers.push(peer);
    }
    Ok(peers)
}

/// One `iceoryx2-mpsc` run.
fn iceoryx2_run(publishers: u32, size: usize, messages: u64, mode: Iox2Mode) -> Result<MpscRun> {
    let setup = Iox2Setup {
        service: format!("conduit-bench/{}", unique_name("iox2-mpsc")),
        publishers,
        buffer: buffer_per_publisher(size, publishers),
        mode,
    };
    let node = node()?;
    let (r, peers) = {
        let service = setup.service(&node, true)?;
        let sub: Subscriber<ipc::Service, [u8], ()> = service
            .subscriber_builder()
            .create()
            .map_err(|e| err("subscriber", e))?;
        let peers = spawn_publishers(Channel::Iceoryx2Mpsc, size, publishers, |id| {
            setup.param(id)
        })?;
        (receive(&sub, publishers as usize, messages), peers)
    };
    // The publishers die (SIGKILL) here; their nodes' files are removed
    // with the dead-node cleanup.
    drop(peers);
    let _ = node.try_cleanup_dead_nodes();
    let (t, elapsed) = r?;
    let mut run = MpscRun::new(
        MpscChannel::Iceoryx2,
        publishers,
        size,
        t,
        elapsed,
        Some((mode, setup.buffer)),
    );
    let lost: u64 = run.gaps.iter().sum();
    let starved = run.starved();
    let mut why = Vec::new();
    if !starved.is_empty() {
        why.push(format!("publishers {starved:?} starved"));
    }
    if lost > 0 && !mode.overflows() {
        why.push(format!("{lost} messages lost in a mode without overflow"));
    }
    if !why.is_empty() {
        run.failure = Some(why.join(", "));
    }
    Ok(run)
}

/// The subscriber's loop: as [`crate::topology::mpsc`]'s, on `receive`.
/// Returns the tally and the length of the timed window.
fn receive(
    sub: &Subscriber<ipc::Service, [u8], ()>,
    n: usize,
    messages: u64,
) -> Result<(Tally, Duration)> {
    let mut t = Tally::new(n, true);
    while t.timed < messages {
        let mut got = 0;
        while got < 1024 {
            match sub.receive().map_err(|e| err("receive", e))? {
                Some(sample) => {
                    t.take(sample.payload());
                    got += 1;
                }
                None => break,
            }
        }
        t.after_batch(got, "iceoryx2 mpsc")?;
    }
    let elapsed = t.window();
    Ok((t, elapsed))
}

/// Peer process `__mpsc-send --channel iceoryx2-mpsc`: one publisher,
/// sending until killed.
///
/// # Errors
/// Setting up or running the publisher failed (also sent as an `ERROR`
/// line).
pub fn peer_main(args: &PeerArgs) -> Result<()> {
    let r = publish(args);
    if let Err(e) = &r {
        announce("ERROR", &e.to_string().replace('\n', " "));
    }
    r
}

fn publish(args: &PeerArgs) -> Result<()> {
    child_init(args.parent)?;
    let (setup, id) = Iox2Setup::from_param(&args.param)?;
    if args.size < 16 {
        return Err(BenchError::msg(
            "iceoryx2 mpsc messages need 16 bytes or more",
        ));
    }
    let node = node()?;
    let service = setup.service(&node, false)?;
    let p: Publisher<ipc::Service, [u8], ()> = service
        .publisher_builder()
        .initial_max_slice_len(args.size)
        .backpressure_strategy(setup.mode.backpressure())
        .create()
        .map_err(|e| err("publisher", e))?;
    announce("READY", "");
    let mut msg = vec![0u8; args.size];
    let mut seq = 0u64;
    loop {
        encode(&mut msg, id, seq);
        let sample = p.loan_slice_uninit(args.size).map_err(|e| err("loan", e))?;
        // 0: the subscriber's queue was full (spin: the message was
        // discarded) or it is not connected yet; send the same one again.
        let delivered = sample
            .write_from_slice(&msg)
            .send()
            .map_err(|e| err("send", e))?;
        if delivered > 0 {
            seq += 1;
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_matches_the_default_ring() {
        // 32 B: a 64-byte record, 16 384 in 1 MiB.
        assert_eq!(ring_messages(32), 16_384);
        assert_eq!(buffer_per_publisher(32, 2), 8_192);
        assert_eq!(buffer_per_publisher(32, 4), 4_096);
        // 16 B: 32-byte records.
        assert_eq!(ring_messages(16), 32_768);
        // Never an empty queue.
        assert_eq!(buffer_per_publisher(1 << 20, 4), 1);
    }

    #[test]
    fn the_publisher_parameter_round_trips() {
        let s = Iox2Setup {
            service: "conduit-bench/cb-1-2-iox2-mpsc".to_string(),
            publishers: 4,
            buffer: 4096,
            mode: Iox2Mode::Overflow,
        };
        assert_eq!(Iox2Setup::from_param(&s.param(3)).unwrap(), (s, 3));
        for bad in [
            "",
            "a 4 4096 spin",
            "a x 4096 spin 0",
            "a 4 4096 nope 0",
            "a 4 4096 spin 0 9",
        ] {
            assert!(Iox2Setup::from_param(bad).is_err(), "{bad}");
        }
    }

    /// A 16-byte message of publisher `id`, number `seq`.
    fn msg(id: u32, seq: u64) -> Vec<u8> {
        let mut m = vec![0u8; 16];
        encode(&mut m, id, seq);
        m
    }

    #[test]
    fn the_tally_counts_losses_and_rejects_disorder() {
        let mut t = Tally::new(2, true);
        t.take(&msg(0, 5));
        t.take(&msg(1, 0));
        // Before the window: counted as seen only.
        assert_eq!((t.timed, t.seen.clone()), (0, vec![1, 1]));
        t.timing = Some(Instant::now());
        t.take(&msg(0, 6));
        t.take(&msg(0, 9));
        t.take(&msg(1, 1));
        assert_eq!(t.counts, vec![2, 1]);
        assert_eq!(t.gaps, vec![2, 0]);
        assert_eq!(t.timed, 3);
        assert!(t.failure.is_none());
        t.take(&msg(1, 1));
        assert!(t.failure.take().is_some(), "a duplicate is an error");
        t.take(&msg(7, 0));
        assert!(
            t.failure.take().is_some(),
            "an unknown publisher is an error"
        );
        t.take(&[0u8; 8]);
        assert!(t.failure.take().is_some(), "a short message is an error");
    }

    #[test]
    fn without_losses_a_gap_is_an_error() {
        let mut t = Tally::new(1, false);
        t.take(&msg(0, 3));
        t.take(&msg(0, 4));
        assert!(t.failure.is_none());
        t.take(&msg(0, 6));
        let e = t.failure.take().expect("a gap is an error");
        assert!(
            e.to_string().contains("message 6 where 5 was expected"),
            "{e}"
        );
        assert_eq!(t.gaps, vec![0]);
        // The batch check reports it.
        t.take(&msg(0, 9));
        assert!(t.after_batch(1, "mpsc").is_err());
    }

    fn mpsc_args(line: &str) -> MpscArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(
            ["conduit-bench", "mpsc"]
                .into_iter()
                .chain(line.split_whitespace()),
        )
        .unwrap();
        match cli.command {
            Some(crate::cli::Command::Mpsc(a)) => a,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn the_command_line_selects_channels_rounds_and_mode() {
        let a = mpsc_args("");
        assert_eq!(a.channels, [MpscChannel::Shm]);
        assert_eq!((a.rounds, a.iceoryx2), (1, Iox2Mode::Retry));
        // The default is conduit's `mpsc` alone, run by `topology::mpsc`.
        assert!(!wanted(&a));
        let a = mpsc_args("--channels shm,iceoryx2 --rounds 3 --iceoryx2 spin");
        assert_eq!(a.channels, [MpscChannel::Shm, MpscChannel::Iceoryx2]);
        assert_eq!((a.rounds, a.iceoryx2), (3, Iox2Mode::Spin));
        assert!(wanted(&a));
        assert!(wanted(&mpsc_args("--channels iceoryx2-mpsc")));
        assert!(wanted(&mpsc_args("--rounds 2")));
    }

    #[test]
    fn medians_and_names() {
        assert_eq!(median_of(&[]), 0.0);
        assert_eq!(median_of(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median_of(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        for c in [MpscChannel::Shm, MpscChannel::Iceoryx2] {
            assert_eq!(MpscChannel::parse(c.name()).unwrap(), c);
        }
        for m in [Iox2Mode::Spin, Iox2Mode::Retry, Iox2Mode::Overflow] {
            assert_eq!(Iox2Mode::parse(m.name()).unwrap(), m);
        }
        assert!(MpscChannel::parse("udp").is_err());
        assert!(Iox2Mode::parse("block").is_err());
    }
}
