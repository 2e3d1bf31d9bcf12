//! `ring_scribble`: a subscriber polling a shared-memory ring whose file the
//! input scribbles on between offers, polls and waits, as a hostile process
//! with write access would.
//!
//! Every input gets a fresh ring (so a crash reproduces from its input alone)
//! in one directory per process, on tmpfs (`/dev/shm`) when there is one. The
//! scribbles are `pwrite`s to the ring file: the same page cache the
//! publisher's and the subscriber's mappings show, so they land in shared
//! memory without a second mapping or any `unsafe` here.
//!
//! The subscriber (and the publisher, which also reads the shared words) must
//! never panic, hang or touch memory outside the mapping; every payload it
//! hands out must be at most the ring's maximum message length.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use conduit_ringbuf::{layout, Publisher, RingConfig, Subscriber, WaitStrategy};

use crate::Input;

/// Most operations decoded from one input.
const MAX_OPS: usize = 256;
/// Data capacity of the ring: small, so records wrap often.
const CAPACITY: usize = 4096;
/// Largest message.
const MAX_MESSAGE: usize = 1024;

/// Runs one input.
pub fn run(data: &[u8]) {
    polled(data);
}

/// Runs one input; returns the records the subscriber received (the seed
/// test checks the seeds reach the data path).
pub fn polled(data: &[u8]) -> usize {
    let mut records = 0;
    let mut inp = Input::new(data);
    let (mut p, mut s, file) = fresh_ring();
    let len = file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        match inp.u8() % 12 {
            0 | 1 => {
                let n = inp.below(MAX_MESSAGE + 64);
                let _ = p.offer(inp.u32(), &vec![inp.u8(); n]);
            }
            2 | 3 => {
                let off = inp.below(len / 8) * 8;
                let v = match inp.u8() % 6 {
                    0 => inp.u64(),
                    1 => u64::from(inp.u8()),
                    // A commit word of a record near the tail.
                    2 => p.position() + u64::from(inp.u8() % 16) * 32 + 1,
                    3 => u64::from(u32::MAX) << (inp.u8() % 2 * 32),
                    4 => s.position().wrapping_add(u64::from(inp.u16())),
                    _ => layout::ATTENTION_MEMBERSHIP | u64::from(inp.u8()),
                };
                scribble(&file, off, &v.to_le_bytes());
            }
            4 => {
                let off = inp.below(len / 4) * 4;
                let v = match inp.u8() % 4 {
                    0 => inp.u32(),
                    1 => u32::from(inp.u8()),
                    2 => layout::PADDING_LEN,
                    _ => (MAX_MESSAGE as u32).wrapping_add(u32::from(inp.u8())),
                };
                scribble(&file, off, &v.to_le_bytes());
            }
            5 => {
                let off = inp.below(len);
                let n = inp.below(64);
                scribble(&file, off, inp.bytes(n));
            }
            6..=8 => {
                let limit = match inp.u8() {
                    0 => usize::MAX,
                    l => usize::from(l),
                };
                let _ = s.poll(
                    |_, payload| {
                        records += 1;
                        assert!(
                            payload.len() <= MAX_MESSAGE,
                            "payload of {} bytes, over the maximum {MAX_MESSAGE}",
                            payload.len()
                        )
                    },
                    limit,
                );
            }
            9 => {
                let strategy = match inp.u8() % 3 {
                    0 => WaitStrategy::Spin,
                    1 => WaitStrategy::SpinYield,
                    _ => WaitStrategy::Block,
                };
                let _ = s.wait(strategy, Some(Duration::from_micros(1)));
            }
            10 => {
                let _ = p.is_connected();
                let _ = p.subscriber_count();
                let _ = p.all_consumed();
                let _ = s.is_connected();
                let _ = s.poll_idle();
                if let Ok(mut c) = p.try_claim(inp.u32(), inp.below(MAX_MESSAGE + 64)) {
                    c.as_mut_slice().fill(0xa5);
                    if inp.bool() {
                        c.commit();
                    }
                }
            }
            _ => {
                // A late joiner validates the scribbled header and slots.
                if let Ok(mut s2) = Subscriber::open(&ring_name(), Some(dir())) {
                    let _ = s2.is_connected();
                    let _ = p.is_connected();
                    let _ = s2.poll(|_, b| assert!(b.len() <= MAX_MESSAGE), 64);
                }
            }
        }
    }
    records
}

/// A new ring, a subscriber that the publisher has activated, and the ring
/// file opened for scribbling: the only code that depends on how rings are
/// created and opened.
fn fresh_ring() -> (Publisher, Subscriber, File) {
    let config = RingConfig {
        capacity: CAPACITY,
        max_message_len: MAX_MESSAGE,
        max_subscribers: 4,
        max_publishers: 1,
        dir: Some(dir().to_path_buf()),
        mode: 0o600,
    };
    let mut p = Publisher::create(&ring_name(), &config).expect("harness: creating the ring");
    let mut s = Subscriber::open(&ring_name(), Some(dir())).expect("harness: opening the ring");
    for _ in 0..1000 {
        if p.is_connected() && s.is_connected() {
            let file = File::options()
                .read(true)
                .write(true)
                .open(p.path())
                .expect("harness: opening the ring file");
            return (p, s, file);
        }
        std::thread::yield_now();
    }
    panic!("harness: the subscriber was not activated");
}

/// Writes `bytes` at `off` in the ring file, within its length.
fn scribble(file: &File, off: usize, bytes: &[u8]) {
    let _ = file.write_all_at(bytes, off as u64);
}

/// This process's ring directory, created on first use; directories left by
/// earlier fuzzing processes that are gone are removed then.
/// The ring's name: one per thread (test threads share the process and its directory; each
/// keeps one ring, made anew per input under the old ring's publisher lock).
fn ring_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NAME: String = format!("ring{}", NEXT.fetch_add(1, Ordering::Relaxed));
    }
    NAME.with(String::clone)
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("conduit-fuzz-"))
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let d = base.join(format!("conduit-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("harness: creating the ring directory");
        d
    })
}
