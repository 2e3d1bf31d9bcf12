//! Reading one counters file with `conduit-counters`' checked parser, into
//! the few things the snapshot needs. The file is untrusted: it is read
//! with a bound on its length, and every check is the parser's.

use crate::model::Raw;
use conduit_counters::{parse, Kind, DROP_SLOTS, MAX_FILE_LEN};
use std::io::Read;
use std::path::Path;

/// One process's counters file.
#[derive(Debug)]
pub struct FileData {
    /// Pid in the header.
    pub pid: u32,
    /// Process name in the header.
    pub process_name: String,
    /// The first handle's open time (Unix ns).
    pub start_time_unix_ns: u64,
    /// Slot places.
    pub slot_count: u32,
    /// Handles of the process that found no free slot.
    pub handles_without_slot: u32,
    /// The slots in use.
    pub handles: Vec<HandleData>,
}

/// One slot in use.
#[derive(Debug)]
pub struct HandleData {
    /// Slot index.
    pub slot: u32,
    /// Generation of the slot.
    pub generation: u32,
    /// `shm:` subscription: its slot in the ring file.
    pub ring_slot: Option<u32>,
    /// `shm` or `udp`.
    pub transport: &'static str,
    /// `publication` or `subscription`.
    pub role: &'static str,
    /// URI.
    pub uri: String,
    /// Driver.
    pub driver: String,
    /// Open time (Unix ns).
    pub open_time_unix_ns: u64,
    /// Counters.
    pub counters: Raw,
    /// Drops by reason index.
    pub drops: [u64; DROP_SLOTS],
}

/// Reads and parses the counters file at `path`.
pub fn read_file(path: &Path) -> Result<FileData, String> {
    let f = crate::procs::open_regular(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    // One byte more than the largest file tells an oversized one apart.
    f.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(format!("larger than {MAX_FILE_LEN} bytes"));
    }
    let snap = parse(&bytes).map_err(|e| e.to_string())?;
    let mut handles = Vec::with_capacity(snap.slots.len());
    for s in snap.slots {
        let (transport, role) = match s.kind {
            Kind::ShmPublication => ("shm", "publication"),
            Kind::ShmSubscription => ("shm", "subscription"),
            Kind::UdpPublication => ("udp", "publication"),
            Kind::UdpSubscription => ("udp", "subscription"),
            other => return Err(format!("slot {}: unknown kind {}", s.index, other.raw())),
        };
        handles.push(HandleData {
            slot: s.index,
            generation: s.generation,
            ring_slot: (s.ring_slot != conduit_counters::NO_RING_SLOT).then_some(s.ring_slot),
            transport,
            role,
            uri: s.uri,
            driver: s.driver,
            open_time_unix_ns: s.open_time_unix_ns,
            drops: s.counters.drops,
            counters: s.counters,
        });
    }
    Ok(FileData {
        pid: snap.pid,
        process_name: snap.process_name,
        start_time_unix_ns: snap.start_time_unix_ns,
        slot_count: snap.slot_count,
        handles_without_slot: snap.handles_without_slot,
        handles,
    })
}
