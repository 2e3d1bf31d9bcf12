//! Round trip of 32-byte messages over two `conduit-ringbuf` rings between two
//! pinned processes, beside the physical limit measured in the same run: one
//! cache line bounced between the same two processes.
//!
//! `ring_pingpong [ROUND_TRIPS]` prints p50/p90/p99/p99.9/max in ns for
//! `limit, ring, limit, ring` (interleaved, so a change of vCPU placement
//! during the run shows up). A development tool; the real benchmark is
//! `conduit-bench`.

use conduit_ringbuf::{ring_dir, Publisher, RingConfig, Subscriber};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CMD_IDLE: u64 = 0;
const CMD_LIMIT: u64 = 1;
const CMD_RING: u64 = 2;
const CMD_EXIT: u64 = 3;
const STOP: u64 = u64::MAX - 1;
const END: u32 = u32::MAX;
const PARENT_LIMIT: usize = usize::MAX;

/// A shared page: the bounced line at 0, the command at 128, the ack at 256.
struct Page {
    ptr: *mut u8,
}

impl Page {
    fn open(path: &std::path::Path, create: bool) -> Page {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .expect("open page");
        f.set_len(4096).expect("size page");
        // SAFETY: a fresh shared mapping of a 4096-byte file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Page { ptr: p.cast() }
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= 4096 && off % 8 == 0);
        // SAFETY: in bounds and aligned (asserted) in a mapping never unmapped.
        unsafe { &*self.ptr.add(off).cast::<AtomicU64>() }
    }
}

fn pin(pid: libc::pid_t, cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity get valid
    // pointers. Failure (one CPU) is ignored.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn ring_config() -> RingConfig {
    RingConfig {
        capacity: 1 << 16,
        max_message_len: 1 << 12,
        ..RingConfig::default()
    }
}

fn pong(tag: &str) {
    let dir = ring_dir(None);
    let page = Page::open(&dir.join(format!("{tag}-line")), false);
    let mut out =
        Publisher::create(&format!("{tag}-pong"), &ring_config()).expect("pong publisher");
    let mut input = Subscriber::open(&format!("{tag}-ping"), None).expect("ping subscriber");
    let (line, cmd, ack) = (page.word(0), page.word(128), page.word(256));
    loop {
        match cmd.load(Ordering::Acquire) {
            CMD_LIMIT => {
                loop {
                    let v = line.load(Ordering::Acquire);
                    if v == STOP {
                        break;
                    }
                    if v & 1 == 1 {
                        line.store(v + 1, Ordering::Release);
                    }
                }
                ack.store(CMD_LIMIT, Ordering::Release);
                while cmd.load(Ordering::Acquire) == CMD_LIMIT {}
            }
            CMD_RING => {
                let mut done = false;
                let mut linked = false;
                while !done {
                    input
                        .poll(
                            |t, b| {
                                if t == END {
                                    done = true;
                                } else {
                                    while out.offer(t, b).is_err() {}
                                }
                            },
                            usize::MAX,
                        )
                        .expect("poll ping");
                    // Activate the parent's subscriber before the first ping.
                    if !linked {
                        linked = out.is_connected();
                    }
                }
                ack.store(CMD_RING, Ordering::Release);
                while cmd.load(Ordering::Acquire) == CMD_RING {}
            }
            CMD_EXIT => return,
            _ => std::hint::spin_loop(),
        }
    }
}

fn report(name: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!(
        "{name:>6}: p50 {:>5} ns  p90 {:>5}  p99 {:>5}  p99.9 {:>6}  max {:>8}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        v[v.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 2 && args[1] == "pong" {
        pin(0, 1);
        pong(&args[2]);
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("ring_pingpong: watchdog fired");
        std::process::exit(2);
    });
    let tag = format!("ring-pp-{}", std::process::id());
    let dir = ring_dir(None);
    let page_path = dir.join(format!("{tag}-line"));
    let page = Page::open(&page_path, true);
    let mut ping =
        Publisher::create(&format!("{tag}-ping"), &ring_config()).expect("ping publisher");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["pong", &tag])
        .spawn()
        .expect("spawn pong");
    pin(0, 0);
    let mut pongs = Subscriber::open(&format!("{tag}-pong"), None).expect("pong subscriber");
    let (line, cmd, ack) = (page.word(0), page.word(128), page.word(256));
    let payload = [7u8; 32];

    let limit = |rounds: usize| -> Vec<u64> {
        line.store(0, Ordering::Release);
        ack.store(CMD_IDLE, Ordering::Release);
        cmd.store(CMD_LIMIT, Ordering::Release);
        let mut lat = Vec::with_capacity(rounds);
        for i in 0..rounds as u64 {
            let t = Instant::now();
            line.store(2 * i + 1, Ordering::Release);
            while line.load(Ordering::Acquire) != 2 * i + 2 {}
            lat.push(t.elapsed().as_nanos() as u64);
        }
        line.store(STOP, Ordering::Release);
        while ack.load(Ordering::Acquire) != CMD_LIMIT {}
        cmd.store(CMD_IDLE, Ordering::Release);
        lat
    };

    // Ring phase: connect both directions first.
    let mut ring = |rounds: usize| -> Vec<u64> {
        ack.store(CMD_IDLE, Ordering::Release);
        cmd.store(CMD_RING, Ordering::Release);
        while !ping.is_connected() || !pongs.is_connected() {
            let _ = pongs.poll(|_, _| {}, 1);
            std::thread::yield_now();
        }
        let mut lat = Vec::with_capacity(rounds);
        for i in 0..rounds as u32 {
            let t = Instant::now();
            ping.offer(i, &payload).expect("offer ping");
            let mut got = 0;
            while got == 0 {
                got = pongs
                    .poll(|_, b| assert_eq!(b.len(), 32), PARENT_LIMIT)
                    .expect("poll pong");
            }
            lat.push(t.elapsed().as_nanos() as u64);
        }
        ping.offer(END, &[]).expect("offer end");
        while ack.load(Ordering::Acquire) != CMD_RING {}
        cmd.store(CMD_IDLE, Ordering::Release);
        lat
    };

    let _ = limit(n / 10);
    for _ in 0..2 {
        report("limit", limit(n));
        report("ring", ring(n));
    }
    report("limit", limit(n));
    cmd.store(CMD_EXIT, Ordering::Release);
    let _ = child.wait();
    let _ = std::fs::remove_file(&page_path);
}
