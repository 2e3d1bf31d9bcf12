//! The snapshot every view is made from: the counters files of the stats
//! directory, read and checked, with what follows from them (liveness,
//! rates against an earlier snapshot, lag, slow subscribers). This is also
//! the JSON schema of `conduit-stat --json` (see docs/observability.md).

use crate::procs;
use crate::source::{self, FileData};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Version of the JSON schema.
pub const SCHEMA: u32 = 1;

/// Most counters files read in one snapshot.
const MAX_FILES: usize = 10_000;

/// The raw counters of one handle, as its counters file holds them (the
/// JSON's `counters`: every field but `drops`, which `Handle::drops` gives
/// by name).
pub type Raw = conduit_counters::CounterValues;

/// Per-second rates between two snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    /// Seconds between the two snapshots.
    pub interval_s: f64,
    /// Messages per second.
    pub messages_per_s: f64,
    /// Payload bytes per second.
    pub bytes_per_s: f64,
    /// Position (stream bytes, headers included) per second.
    pub position_per_s: f64,
    /// Back-pressure refusals per second.
    pub back_pressure_per_s: f64,
    /// NAKs sent per second.
    pub naks_sent_per_s: f64,
    /// NAKs received per second.
    pub naks_received_per_s: f64,
    /// Retransmissions per second.
    pub retransmits_per_s: f64,
    /// Drops per second.
    pub drops_per_s: f64,
}

/// What the ring file of an `shm:` handle says (live, where the counters
/// file has positions only from the handle's last cold-path update).
#[derive(Debug, Clone, Serialize)]
pub struct RingView {
    /// The publisher's position (see `conduit-stat rings`).
    pub position: u64,
    /// Subscription: its slot's read position.
    pub read_position: Option<u64>,
    /// Publication: the slowest active subscriber's position.
    pub slowest_position: Option<u64>,
}

/// One open channel handle (a slot in use of a counters file).
#[derive(Debug, Clone, Serialize)]
pub struct Handle {
    /// Pid of the process holding the handle.
    pub pid: u32,
    /// Its name (from the counters file).
    pub process_name: String,
    /// Whether that process is alive.
    pub alive: bool,
    /// Slot index in the counters file.
    pub slot: u32,
    /// Slot generation (bumped on reuse).
    pub generation: u32,
    /// `shm` or `udp`.
    pub transport: &'static str,
    /// `publication` or `subscription`.
    pub role: &'static str,
    /// The URI the handle was opened with.
    pub uri: String,
    /// The channel: the URI without its options (`shm:NAME`, `udp://HOST:PORT`).
    pub channel: String,
    /// I/O driver (`socket`, `uring`, `ring`).
    pub driver: String,
    /// `shm:` subscription: its subscriber slot in the ring file.
    pub ring_slot: Option<u32>,
    /// When the handle was opened (Unix ns).
    pub open_time_unix_ns: u64,
    /// Seconds since the handle's last counters update.
    pub heartbeat_age_s: Option<f64>,
    /// The raw counters.
    pub counters: Raw,
    /// `shm:`: what its ring file says, if it could be read.
    pub ring: Option<RingView>,
    /// Drops by reason (non-zero ones), by protocol drop reason name.
    pub drops: BTreeMap<String, u64>,
    /// Bytes this end is behind: a subscription, behind the publisher
    /// position it or its publication (same channel on this host) reports;
    /// a publication, its position less its slowest subscriber's.
    pub lag_bytes: Option<u64>,
    /// `lag_bytes` over the publisher's recent position rate.
    pub lag_seconds: Option<f64>,
    /// Rates against the previous snapshot (`None` on the first).
    pub rates: Option<Rates>,
    /// A subscription that is slow: see docs/observability.md.
    pub slow: bool,
}

/// One counters file (one process).
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    /// Pid (from the file).
    pub pid: u32,
    /// Process name.
    pub process_name: String,
    /// Whether it is alive (and the pid not reused).
    pub alive: bool,
    /// When the process opened its first handle (Unix ns).
    pub start_time_unix_ns: u64,
    /// Path of its counters file.
    pub file: PathBuf,
    /// Slot places in the file.
    pub slot_count: u32,
    /// Slots in use.
    pub handles: u32,
    /// Handles that found every slot taken (they publish no counters).
    pub handles_without_slot: u32,
}

/// Everything read at one time.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// [`SCHEMA`].
    pub schema: u32,
    /// When it was taken (Unix ns).
    pub taken_unix_ns: u64,
    /// The directory of the counters files.
    pub stats_dir: PathBuf,
    /// Counters files read.
    pub processes: Vec<Process>,
    /// Open handles.
    pub handles: Vec<Handle>,
    /// Files skipped and why (also printed on stderr).
    pub warnings: Vec<String>,
}

/// Thresholds that make a subscription slow.
#[derive(Debug, Clone, Copy)]
pub struct SlowRule {
    /// Lag in bytes at or above which a subscription is slow.
    pub bytes: u64,
    /// Lag in seconds at or above which a subscription is slow.
    pub seconds: f64,
}

impl Default for SlowRule {
    fn default() -> Self {
        SlowRule {
            bytes: 256 * 1024,
            seconds: 0.1,
        }
    }
}

/// Now, in Unix nanoseconds.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The channel a URI names: the URI without its `?options`.
pub fn channel_of(uri: &str) -> String {
    uri.split('?').next().unwrap_or("").to_owned()
}

/// The key matching the two ends of one channel on this host: the ring
/// name for `shm:`, the port for `udp:` (a publication names the
/// subscriber's address, the subscription may be bound to a wildcard).
fn match_key(transport: &str, channel: &str) -> String {
    match transport {
        "udp" => format!(
            "udp:{}",
            channel
                .rsplit(':')
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
        ),
        _ => channel.to_owned(),
    }
}

/// Reads every counters file of `dir` into a snapshot (no rates yet: see
/// [`Snapshot::derive`]), and the ring files in `shm_dir` of its `shm:`
/// handles. Bad files become warnings.
pub fn load(dir: &Path, shm_dir: &Path) -> Snapshot {
    let mut snap = load_counters(dir);
    snap.read_rings(shm_dir);
    snap
}

fn load_counters(dir: &Path) -> Snapshot {
    let mut snap = Snapshot {
        schema: SCHEMA,
        taken_unix_ns: now_unix_ns(),
        stats_dir: dir.to_path_buf(),
        processes: Vec::new(),
        handles: Vec::new(),
        warnings: Vec::new(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return snap,
        Err(e) => {
            snap.warnings
                .push(format!("cannot read {}: {e}", dir.display()));
            return snap;
        }
    };
    let mut files: Vec<(u32, PathBuf)> = entries
        .take(MAX_FILES)
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let pid = conduit_counters::pid_from_file_name(name.to_str()?)?;
            Some((pid, e.path()))
        })
        .collect();
    files.sort();
    for (pid, path) in files {
        let data = match source::read_file(&path) {
            Ok(d) => d,
            Err(why) => {
                snap.warnings
                    .push(format!("skipped {}: {why}", path.display()));
                continue;
            }
        };
        if data.pid != pid {
            snap.warnings.push(format!(
                "skipped {}: it names pid {}",
                path.display(),
                data.pid
            ));
            continue;
        }
        add_file(&mut snap, path, data);
    }
    snap.handles.sort_by(|a, b| {
        (&a.channel, a.role, a.pid, a.slot).cmp(&(&b.channel, b.role, b.pid, b.slot))
    });
    snap
}

fn add_file(snap: &mut Snapshot, path: PathBuf, data: FileData) {
    let alive = procs::pid_alive(data.pid, Some(data.start_time_unix_ns));
    snap.processes.push(Process {
        pid: data.pid,
        process_name: data.process_name.clone(),
        alive,
        start_time_unix_ns: data.start_time_unix_ns,
        file: path,
        slot_count: data.slot_count,
        handles: data.handles.len() as u32,
        handles_without_slot: data.handles_without_slot,
    });
    for h in data.handles {
        let channel = channel_of(&h.uri);
        let drops = h
            .drops
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (drop_reason_name(i), n))
            .collect();
        let age = (h.counters.heartbeat_unix_ns != 0).then(|| {
            snap.taken_unix_ns
                .saturating_sub(h.counters.heartbeat_unix_ns) as f64
                / 1e9
        });
        snap.handles.push(Handle {
            pid: data.pid,
            process_name: data.process_name.clone(),
            alive,
            slot: h.slot,
            generation: h.generation,
            transport: h.transport,
            role: h.role,
            uri: h.uri,
            channel,
            driver: h.driver,
            ring_slot: h.ring_slot,
            open_time_unix_ns: h.open_time_unix_ns,
            heartbeat_age_s: age,
            counters: h.counters,
            ring: None,
            drops,
            lag_bytes: None,
            lag_seconds: None,
            rates: None,
            slow: false,
        });
    }
}

/// The protocol's name of drop reason `i` (`reason_N` past the known ones).
pub fn drop_reason_name(i: usize) -> String {
    conduit_counters::DROP_REASON_NAMES
        .get(i)
        .map(|r| (*r).to_owned())
        .unwrap_or_else(|| format!("reason_{i}"))
}

fn per_s(now: u64, then: u64, dt: f64) -> f64 {
    now.saturating_sub(then) as f64 / dt
}

impl Snapshot {
    /// Fills in [`Handle::ring`] from the ring files in `shm_dir`.
    fn read_rings(&mut self, shm_dir: &Path) {
        let locks = crate::procs::Locks::read();
        let positions = self.shm_publisher_positions();
        let mut rings: HashMap<String, Option<crate::rings::RingReport>> = HashMap::new();
        for h in &mut self.handles {
            if h.transport != "shm" {
                continue;
            }
            let name = h
                .channel
                .strip_prefix("shm:")
                .unwrap_or(&h.channel)
                .to_owned();
            let ring = rings
                .entry(name.clone())
                .or_insert_with(|| crate::rings::read_one(shm_dir, &name, &locks, &positions));
            let Some(r) = ring else { continue };
            let active = || r.subscribers.iter().filter(|s| s.state == "active");
            h.ring = Some(if h.role == "subscription" {
                RingView {
                    position: r.position,
                    // Its slot: the one the counters file names, else the
                    // process's slot (the slowest of them when the process
                    // has several subscriptions to this ring).
                    read_position: match h.ring_slot {
                        Some(i) => active()
                            .find(|s| s.slot == i && s.pid == h.pid)
                            .map(|s| s.position),
                        None => active()
                            .filter(|s| s.pid == h.pid)
                            .map(|s| s.position)
                            .min(),
                    },
                    slowest_position: None,
                }
            } else {
                RingView {
                    position: r.position,
                    read_position: None,
                    slowest_position: active().map(|s| s.position).min(),
                }
            });
        }
    }

    /// Fills in rates (against `prev`, if any), lag and slowness.
    pub fn derive(&mut self, prev: Option<&Snapshot>, rule: SlowRule) {
        if let Some(prev) = prev {
            let dt = self.taken_unix_ns.saturating_sub(prev.taken_unix_ns) as f64 / 1e9;
            let old: HashMap<_, _> = prev
                .handles
                .iter()
                .map(|h| {
                    (
                        (h.pid, h.slot, h.generation, h.open_time_unix_ns),
                        &h.counters,
                    )
                })
                .collect();
            if dt > 0.0 {
                for h in &mut self.handles {
                    let Some(o) = old.get(&(h.pid, h.slot, h.generation, h.open_time_unix_ns))
                    else {
                        continue;
                    };
                    let c = &h.counters;
                    h.rates = Some(Rates {
                        interval_s: dt,
                        messages_per_s: per_s(c.messages, o.messages, dt),
                        bytes_per_s: per_s(c.bytes, o.bytes, dt),
                        position_per_s: per_s(c.position, o.position, dt),
                        back_pressure_per_s: per_s(c.back_pressure, o.back_pressure, dt),
                        naks_sent_per_s: per_s(c.naks_sent, o.naks_sent, dt),
                        naks_received_per_s: per_s(c.naks_received, o.naks_received, dt),
                        retransmits_per_s: per_s(c.retransmits, o.retransmits, dt),
                        drops_per_s: per_s(c.drops_total, o.drops_total, dt),
                    });
                }
            }
        }
        // Rates of the rings' publisher positions, per channel.
        let mut ring_rates: HashMap<String, f64> = HashMap::new();
        if let Some(prev) = prev {
            let dt = self.taken_unix_ns.saturating_sub(prev.taken_unix_ns) as f64 / 1e9;
            let before: HashMap<&str, u64> = prev
                .handles
                .iter()
                .filter_map(|h| Some((h.channel.as_str(), h.ring.as_ref()?.position)))
                .collect();
            for h in &self.handles {
                if let (Some(r), Some(b)) = (&h.ring, before.get(h.channel.as_str())) {
                    if dt > 0.0 {
                        ring_rates.insert(h.channel.clone(), per_s(r.position, *b, dt));
                    }
                }
            }
        }
        // The publication of each channel on this host: its position and rate.
        let mut publishers: HashMap<String, (u64, Option<f64>)> = HashMap::new();
        for h in self
            .handles
            .iter()
            .filter(|h| h.role == "publication" && h.alive)
        {
            let e = publishers
                .entry(match_key(h.transport, &h.channel))
                .or_insert((0, None));
            e.0 = e.0.max(h.counters.position);
            if let Some(r) = &h.rates {
                e.1 = Some(e.1.unwrap_or(0.0).max(r.position_per_s));
            }
        }
        for h in &mut self.handles {
            let c = &h.counters;
            let local = publishers.get(&match_key(h.transport, &h.channel));
            let ring_rate = ring_rates.get(&h.channel).copied();
            let (lag, rate) = if let Some(r) = &h.ring {
                match (h.role, r.read_position, r.slowest_position) {
                    ("subscription", Some(p), _) => (Some(r.position.saturating_sub(p)), ring_rate),
                    ("publication", _, Some(p)) => (Some(r.position.saturating_sub(p)), ring_rate),
                    _ => (None, None),
                }
            } else if h.role == "subscription" {
                let known = c.peer_position.max(local.map_or(0, |p| p.0));
                (
                    Some(known.saturating_sub(c.position)),
                    local.and_then(|p| p.1),
                )
            } else if c.subscriber_slots_in_use > 0 || c.sessions > 0 {
                (
                    Some(c.position.saturating_sub(c.peer_position)),
                    h.rates.as_ref().map(|r| r.position_per_s),
                )
            } else {
                (None, None)
            };
            h.lag_bytes = lag;
            h.lag_seconds = match (lag, rate) {
                (Some(0), _) => Some(0.0),
                (Some(l), Some(r)) if r > 0.0 => Some(l as f64 / r),
                _ => None,
            };
            h.slow = h.role == "subscription"
                && h.alive
                && lag.is_some_and(|l| {
                    l >= rule.bytes || h.lag_seconds.is_some_and(|s| s >= rule.seconds)
                });
        }
    }

    /// The positions of the live `shm:` publications, by ring name.
    pub fn shm_publisher_positions(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for h in &self.handles {
            if h.alive && h.transport == "shm" && h.role == "publication" {
                let name = h.channel.strip_prefix("shm:").unwrap_or(&h.channel);
                let e = m.entry(name.to_owned()).or_insert(0);
                *e = (*e).max(h.counters.position);
            }
        }
        m
    }

    /// The files of dead processes.
    pub fn dead_files(&self) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(|p| !p.alive)
    }
}

/// Removes the counters file of each dead process in `dead` (re-checking
/// liveness first); returns the paths removed.
pub fn remove_dead(dead: &[&Process]) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for p in dead {
        if procs::pid_alive(p.pid, Some(p.start_time_unix_ns)) {
            continue;
        }
        // The shm directory is writable by everyone: never remove through a
        // planted symbolic link to another directory.
        let linked = p
            .file
            .parent()
            .is_none_or(|d| std::fs::symlink_metadata(d).map_or(true, |m| !m.file_type().is_dir()));
        if linked {
            eprintln!(
                "conduit-stat: warning: not removing {}: its directory is not a plain directory",
                p.file.display()
            );
            continue;
        }
        match std::fs::remove_file(&p.file) {
            Ok(()) => removed.push(p.file.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "conduit-stat: warning: cannot remove {}: {e}",
                p.file.display()
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(role: &'static str, uri: &str, c: Raw) -> Handle {
        Handle {
            pid: 1,
            process_name: "t".into(),
            alive: true,
            slot: 0,
            generation: 1,
            transport: if uri.starts_with("udp") { "udp" } else { "shm" },
            role,
            uri: uri.into(),
            channel: channel_of(uri),
            driver: String::new(),
            ring_slot: None,
            open_time_unix_ns: 1,
            heartbeat_age_s: None,
            counters: c,
            ring: None,
            drops: BTreeMap::new(),
            lag_bytes: None,
            lag_seconds: None,
            rates: None,
            slow: false,
        }
    }

    fn snap(t: u64, handles: Vec<Handle>) -> Snapshot {
        Snapshot {
            schema: SCHEMA,
            taken_unix_ns: t,
            stats_dir: PathBuf::new(),
            processes: vec![],
            handles,
            warnings: vec![],
        }
    }

    #[test]
    fn lag_and_rates_from_two_snapshots() {
        let mut pub0 = Raw::default();
        (pub0.position, pub0.messages, pub0.subscriber_slots_in_use) = (1000, 10, 1);
        let mut sub0 = Raw::default();
        sub0.position = 1000;
        let mut pub1 = pub0.clone();
        (pub1.position, pub1.messages, pub1.peer_position) = (1_001_000, 1010, 1000);
        let a = snap(
            0,
            vec![handle("publication", "shm:x?capacity=64k", pub0.clone()), {
                let mut h = handle("subscription", "shm:x", sub0.clone());
                h.slot = 1;
                h
            }],
        );
        let mut sub1 = handle("subscription", "shm:x", sub0);
        sub1.slot = 2;
        let mut b = snap(
            1_000_000_000,
            vec![handle("publication", "shm:x?capacity=64k", pub1), sub1],
        );
        b.derive(Some(&a), SlowRule::default());
        let p = &b.handles[0];
        assert_eq!(p.rates.as_ref().unwrap().messages_per_s, 1000.0);
        assert_eq!(p.lag_bytes, Some(1_000_000));
        let s = &b.handles[1];
        assert!(s.rates.is_none(), "another slot is another handle");
        assert_eq!(s.lag_bytes, Some(1_000_000));
        assert_eq!(s.lag_seconds, Some(1.0));
        assert!(s.slow);
        assert!(!p.slow, "only subscriptions are marked slow");
    }

    #[test]
    fn udp_ends_match_by_port() {
        assert_eq!(
            match_key("udp", &channel_of("udp://127.0.0.1:9000?driver=socket")),
            match_key("udp", &channel_of("udp://0.0.0.0:9000"))
        );
        assert_eq!(channel_of("shm:abc?capacity=1m"), "shm:abc");
    }
}
