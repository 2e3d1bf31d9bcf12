//! What the kernel says about other processes: whether a pid is alive (and
//! is still the process that wrote a file, not a later one with the same pid),
//! and which byte ranges of which files hold locks (`/proc/locks`), which is
//! how the rings' OFD liveness locks are probed when their lock files cannot
//! be opened.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Opens `path` for reading without following a symbolic link and without
/// blocking on a FIFO (the shm directories are writable by everyone), and
/// refuses anything but a regular file.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at
/// 100 in the Linux user ABI on every architecture conduit builds for).
const USER_HZ: u64 = 100;

/// How much later than a file's start time its pid's process may have
/// started before the pid counts as reused (the file's time is taken when
/// its first handle opens, so never before its process started; the slack
/// covers `USER_HZ` and boot-time rounding).
const PID_REUSE_SLACK_NS: u64 = 2_000_000_000;

/// Whether process `pid` is alive and, if `started_unix_ns` is given, is the
/// process that wrote a file stamped with that time (not a newer process
/// that reuses the pid).
pub fn pid_alive(pid: u32, started_unix_ns: Option<u64>) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // A zombie has exited: its counters are final, its handles gone.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return false;
    }
    let (Some(file_start), Some(proc_start)) = (started_unix_ns, process_start_unix_ns(&fields))
    else {
        return true;
    };
    proc_start <= file_start.saturating_add(PID_REUSE_SLACK_NS)
}

/// Start time of a process in Unix nanoseconds from the fields of its
/// `/proc/<pid>/stat` after the command name (field 22, `starttime`, is
/// the 20th of them) and the boot time in `/proc/stat`.
fn process_start_unix_ns(fields: &[&str]) -> Option<u64> {
    let ticks: u64 = fields.get(19)?.parse().ok()?;
    let btime = boot_time_unix_s()?;
    btime
        .checked_mul(1_000_000_000)?
        .checked_add(ticks.checked_mul(1_000_000_000 / USER_HZ)?)
}

fn boot_time_unix_s() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A file's identity as `/proc/locks` prints it: device major, minor, inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    major: u64,
    minor: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file at `path`, if it can be stat'ed.
    pub fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        let dev = m.dev();
        Some(FileId {
            // The glibc encoding of dev_t (gnu_dev_major/minor).
            major: ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff),
            minor: ((dev >> 12) & 0xffff_ff00) | (dev & 0xff),
            ino: m.ino(),
        })
    }
}

/// The held locks of every file, from `/proc/locks`: byte ranges
/// (inclusive; `u64::MAX` for `EOF`) per file.
#[derive(Debug, Default)]
pub struct Locks {
    held: HashMap<FileId, Vec<(u64, u64)>>,
    /// `/proc/locks` could be read.
    pub available: bool,
}

impl Locks {
    /// Reads `/proc/locks` (an empty table, not available, if it cannot).
    pub fn read() -> Locks {
        // The kernel prints the table a page per read and resumes by
        // index, so a lock can be skipped when others are released during
        // the read; the union of two reads makes that much rarer (a lock
        // seen in either was held during the reads).
        let mut locks = match std::fs::read_to_string("/proc/locks") {
            Ok(text) => Locks::parse(&text),
            Err(_) => return Locks::default(),
        };
        if let Ok(text) = std::fs::read_to_string("/proc/locks") {
            for (id, ranges) in Locks::parse(&text).held {
                let mine = locks.held.entry(id).or_default();
                mine.extend(ranges);
                mine.sort_unstable();
                mine.dedup();
            }
        }
        locks
    }

    /// Parses the text of `/proc/locks`; lines it does not understand are
    /// skipped, as are waiters (`->`) that do not hold their lock yet.
    pub fn parse(text: &str) -> Locks {
        let mut held: HashMap<FileId, Vec<(u64, u64)>> = HashMap::new();
        for line in text.lines().take(1_000_000) {
            let mut it = line.split_whitespace();
            let _id = it.next();
            let Some(kind) = it.next() else { continue };
            if kind == "->" {
                continue;
            }
            let (Some(_adv), Some(_rw), Some(_pid), Some(file), Some(start), Some(end)) = (
                it.next(),
                it.next(),
                it.next(),
                it.next(),
                it.next(),
                it.next(),
            ) else {
                continue;
            };
            let mut parts = file.split(':');
            let (Some(maj), Some(min), Some(ino)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(major), Ok(minor), Ok(ino), Ok(start)) = (
                u64::from_str_radix(maj, 16),
                u64::from_str_radix(min, 16),
                ino.parse::<u64>(),
                start.parse::<u64>(),
            ) else {
                continue;
            };
            let end = if end == "EOF" {
                u64::MAX
            } else {
                match end.parse::<u64>() {
                    Ok(e) => e,
                    Err(_) => continue,
                }
            };
            held.entry(FileId { major, minor, ino })
                .or_default()
                .push((start, end));
        }
        Locks {
            held,
            available: true,
        }
    }

    /// Whether some lock on `file` covers byte `at`.
    pub fn is_locked(&self, file: FileId, at: u64) -> bool {
        self.held
            .get(&file)
            .is_some_and(|ranges| ranges.iter().any(|&(s, e)| s <= at && at <= e))
    }

    /// Whether `file` has any lock at all.
    pub fn any(&self, file: FileId) -> bool {
        self.held.get(&file).is_some_and(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks_lines() {
        let text = "1: OFDLCK ADVISORY  WRITE -1 00:1a:4242 0 0\n\
                    2: OFDLCK ADVISORY  WRITE -1 00:1a:4242 4097 4097\n\
                    3: -> OFDLCK ADVISORY  WRITE -1 00:1a:9999 0 0\n\
                    4: FLOCK  ADVISORY  WRITE 12153 fe:00:6889607 0 EOF\n\
                    garbage line\n\
                    5: POSIX ADVISORY READ 1 zz:00:1 0 0\n";
        let l = Locks::parse(text);
        let f = FileId {
            major: 0,
            minor: 0x1a,
            ino: 4242,
        };
        assert!(l.is_locked(f, 0));
        assert!(!l.is_locked(f, 4096));
        assert!(l.is_locked(f, 4097));
        let waiter = FileId {
            major: 0,
            minor: 0x1a,
            ino: 9999,
        };
        assert!(!l.any(waiter), "a waiter does not hold its lock");
        let whole = FileId {
            major: 0xfe,
            minor: 0,
            ino: 6889607,
        };
        assert!(l.is_locked(whole, 1 << 40));
    }

    #[test]
    fn this_process_is_alive_and_pid_0_is_not() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(pid_alive(std::process::id(), Some(now)));
        assert!(pid_alive(std::process::id(), None));
        assert!(!pid_alive(0, None));
        // A file stamped long before this process started is another
        // process's (pid reuse).
        assert!(!pid_alive(std::process::id(), Some(1_000_000_000)));
    }
}
