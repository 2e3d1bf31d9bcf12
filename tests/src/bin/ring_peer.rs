//! Helper process for the ring's cross-process tests.
//!
//! ```text
//! ring_peer publish NAME DIR COUNT [block]   # COUNT = 0: publish until killed
//! ring_peer subscribe NAME DIR COUNT [block] # verify COUNT messages, then exit 0
//! ring_peer hold NAME DIR                    # attach, print "held", never read
//! ring_peer evictee NAME DIR                 # read (print "reading" at the first
//!                                            # message), expect one Evicted ("evicted
//!                                            # MISSED"), then 1000 consecutive live
//!                                            # messages ("live FIRST LAST"), exit 0
//! ring_peer idle NAME DIR [MODE]             # create a publisher (octal file mode), never send
//! ring_peer readlock NAME DIR                # read-lock every byte of every file of the
//!                                            # ring it can open read-only, print
//!                                            # "locked ring=R lockfiles=L denied=D", sleep
//! ```
//!
//! Message `seq` carries `seq` and a checksum of its length and filler bytes;
//! lengths cycle through 16..=64 bytes. Every mode has a watchdog.

use conduit_ringbuf::{OfferError, PollError, Publisher, RingConfig, Subscriber, WaitStrategy};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// The checksum a message `seq` of `len` bytes carries.
fn check(seq: u64, len: usize) -> u64 {
    (seq ^ ((len as u64) << 56))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

fn message_len(seq: u64) -> usize {
    16 + (seq % 7) as usize * 8
}

fn fill(seq: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    let sum = check(seq, buf.len());
    buf[8..16].copy_from_slice(&sum.to_le_bytes());
    for (k, b) in buf[16..].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_add(k as u8);
    }
}

/// Checks one message; returns its sequence number.
fn verify(payload: &[u8]) -> Result<u64, String> {
    if payload.len() < 16 {
        return Err(format!("message of {} bytes", payload.len()));
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
    let sum = u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default());
    if payload.len() != message_len(seq) || sum != check(seq, payload.len()) {
        return Err(format!(
            "message {seq}: bad length {} or checksum",
            payload.len()
        ));
    }
    for (k, b) in payload[16..].iter().enumerate() {
        if *b != (seq as u8).wrapping_add(k as u8) {
            return Err(format!("message {seq}: bad filler byte {k}"));
        }
    }
    Ok(seq)
}

fn config(dir: PathBuf) -> RingConfig {
    RingConfig {
        capacity: 1 << 18,
        max_message_len: 1 << 12,
        max_subscribers: 8,
        max_publishers: 1,
        dir: Some(dir),
        mode: 0o600,
    }
}

fn publish(name: &str, dir: PathBuf, count: u64) -> Result<(), String> {
    let mut p = Publisher::create(name, &config(dir)).map_err(|e| e.to_string())?;
    println!("created");
    let _ = std::io::stdout().flush();
    while !p.is_connected() {
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut seq = 0u64;
    let mut spins = 0u32;
    while count == 0 || seq < count {
        let len = message_len(seq);
        let mut claim = match p.try_claim(1, len) {
            Ok(c) => c,
            Err(OfferError::BackPressured) => {
                spins += 1;
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                }
                continue;
            }
            Err(e) => return Err(format!("claim {seq}: {e}")),
        };
        fill(seq, claim.as_mut_slice());
        claim.commit();
        seq += 1;
    }
    while !p.all_consumed() {
        if !p.is_connected() {
            return Err("subscriber left before consuming everything".into());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    println!("done {seq}");
    Ok(())
}

/// Receives `count` messages in order; returns the count.
pub fn subscribe(
    name: &str,
    dir: PathBuf,
    count: u64,
    strategy: WaitStrategy,
) -> Result<u64, String> {
    let mut s = Subscriber::open(name, Some(&dir)).map_err(|e| e.to_string())?;
    let mut next = 0u64;
    let mut err = None;
    while next < count {
        let r = s.poll(
            |t, b| {
                if err.is_some() {
                    return;
                }
                match verify(b) {
                    Ok(seq) if seq == next && t == 1 => next += 1,
                    Ok(seq) => err = Some(format!("expected message {next}, got {seq} (type {t})")),
                    Err(e) => err = Some(e),
                }
            },
            256,
        );
        if let Some(e) = err.take() {
            return Err(e);
        }
        match r {
            Ok(0) => {
                s.wait(strategy, Some(Duration::from_millis(100)))
                    .map_err(|e| e.to_string())?;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("poll after {next} messages: {e}")),
        }
    }
    Ok(next)
}

/// A subscriber that is expected to be stopped (SIGSTOP) and evicted.
fn evictee(name: &str, dir: PathBuf) -> Result<(), String> {
    let mut s = Subscriber::open(name, Some(&dir)).map_err(|e| e.to_string())?;
    let mut last: Option<u64> = None;
    let mut before_eviction = None;
    let mut first_live = None;
    let mut live = 0u64;
    let mut err = None;
    loop {
        let r = s.poll(
            |_, b| {
                if err.is_some() {
                    return;
                }
                let seq = match verify(b) {
                    Ok(seq) => seq,
                    Err(e) => return err = Some(e),
                };
                match last {
                    None if before_eviction.is_none() => {
                        println!("reading");
                        let _ = std::io::stdout().flush();
                    }
                    None => first_live = Some(seq),
                    Some(l) if seq != l + 1 => {
                        return err = Some(format!("message {seq} after {l}"));
                    }
                    Some(_) => {}
                }
                if before_eviction.is_some() {
                    live += 1;
                }
                last = Some(seq);
            },
            256,
        );
        if let Some(e) = err.take() {
            return Err(e);
        }
        match r {
            Ok(_) => {}
            Err(PollError::Evicted { missed }) => {
                if before_eviction.is_some() {
                    return Err("evicted twice".into());
                }
                before_eviction = Some(last.unwrap_or(0));
                last = None;
                println!("evicted {missed}");
                let _ = std::io::stdout().flush();
            }
            Err(e) => return Err(format!("poll: {e}")),
        }
        if live >= 1000 {
            let (first, before) = (first_live.unwrap_or(0), before_eviction.unwrap_or(0));
            if first <= before {
                return Err(format!("live data from {first}, not after {before}"));
            }
            println!("live {first} {}", last.unwrap_or(0));
            return Ok(());
        }
    }
}

fn hold(name: &str, dir: PathBuf) -> Result<(), String> {
    let mut s = Subscriber::open(name, Some(&dir)).map_err(|e| e.to_string())?;
    while !s.is_connected() {
        std::thread::sleep(Duration::from_micros(100));
    }
    println!("held");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn idle(name: &str, dir: PathBuf, mode: Option<&String>) -> Result<(), String> {
    let mut cfg = config(dir);
    if let Some(m) = mode {
        cfg.mode = u32::from_str_radix(m, 8).map_err(|e| format!("mode {m}: {e}"))?;
    }
    let mut p = Publisher::create(name, &cfg).map_err(|e| e.to_string())?;
    println!("created");
    let _ = std::io::stdout().flush();
    loop {
        p.is_connected();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes a read lock on every byte of `file` that no write lock covers
/// (what any reader can do): the gaps between other holders' write locks.
fn read_lock_all(file: &std::fs::File) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let lock = |cmd: libc::c_int, start: i64, len: i64| {
        // SAFETY: a zeroed flock is valid; l_len 0 means "to the end".
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_RDLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = start;
        fl.l_len = len;
        // SAFETY: a valid fd and flock.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) };
        (r, fl)
    };
    let mut start = 0i64;
    for _ in 0..4096 {
        let (r, fl) = lock(libc::F_OFD_GETLK, start, 0);
        if r != 0 {
            return Err(format!("getlk: {}", std::io::Error::last_os_error()));
        }
        let end = if fl.l_type == libc::F_UNLCK as libc::c_short {
            0
        } else {
            fl.l_start
        };
        if end == 0 || end > start {
            let len = if end == 0 { 0 } else { end - start };
            if lock(libc::F_OFD_SETLK, start, len).0 != 0 {
                return Err(format!("read lock: {}", std::io::Error::last_os_error()));
            }
        }
        if end == 0 || fl.l_len == 0 {
            return Ok(());
        }
        start = fl.l_start + fl.l_len;
    }
    Ok(())
}

/// A user with read access only: read-locks what it can open and holds it.
fn readlock(name: &str, dir: PathBuf) -> Result<(), String> {
    let mut held = Vec::new();
    let ring = std::fs::File::open(dir.join(name)).map_err(|e| e.to_string())?;
    read_lock_all(&ring)?;
    held.push(ring);
    let (mut lockfiles, mut denied) = (0, 0);
    for e in std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let f = e.file_name().to_string_lossy().into_owned();
        if !(f.starts_with(&format!(".{name}.")) && f.ends_with(".lock")) {
            continue;
        }
        match std::fs::File::open(e.path()) {
            Ok(file) => {
                read_lock_all(&file)?;
                held.push(file);
                lockfiles += 1;
            }
            Err(_) => denied += 1,
        }
    }
    println!("locked ring=1 lockfiles={lockfiles} denied={denied}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: ring_peer publish|subscribe|hold NAME DIR [COUNT] [block]");
        std::process::exit(2);
    }
    let _watchdog = conduit_system_tests::watchdog("ring_peer", 120);
    let (name, dir) = (&args[2], PathBuf::from(&args[3]));
    let count: u64 = args.get(4).and_then(|c| c.parse().ok()).unwrap_or(0);
    let strategy = if args.get(5).map(String::as_str) == Some("block") {
        WaitStrategy::Block
    } else {
        WaitStrategy::Spin
    };
    let r = match args[1].as_str() {
        "publish" => publish(name, dir, count),
        "subscribe" => subscribe(name, dir, count, strategy).map(|n| println!("ok {n}")),
        "hold" => hold(name, dir),
        "evictee" => evictee(name, dir),
        "idle" => idle(name, dir, args.get(4)),
        "readlock" => readlock(name, dir),
        other => Err(format!("unknown mode {other}")),
    };
    if let Err(e) = r {
        eprintln!("ring_peer {}: {e}", args[1]);
        std::process::exit(1);
    }
}
