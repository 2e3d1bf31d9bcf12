//! Futex wait/wake on a word in shared memory, and the asymmetric barrier.
//!
//! The futex calls are the shared (not `FUTEX_PRIVATE_FLAG`) variants: the
//! word lives in a `MAP_SHARED` file mapping and the waker is another process.
//!
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` makes every running thread of
//! every process registered with `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`
//! execute a full memory barrier before the call returns. The publisher
//! registers, so its commit path needs no fence instruction: a subscriber about
//! to sleep pays for the barrier instead (see `wait.rs`).

use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;
use std::time::Duration;

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// The futex bitset bit of the futex word value `v`: a sleeper waits with
/// the bit of the value it read, so a cascade hop can wake only sleepers of
/// earlier values (see `wait.rs`). 32 values share a bit cyclically.
pub(crate) fn generation_bit(v: u32) -> u32 {
    1 << (v % 32)
}

/// Sleeps while `*word == expected`, at most `timeout`, as a waiter of the
/// bitset `bit`. True if a `FUTEX_WAKE` woke this waiter (the call may also
/// return true spuriously); false on timeout, a changed word or a signal.
pub(crate) fn wait(word: &AtomicU32, expected: u32, bit: u32, timeout: Duration) -> bool {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return false;
    }
    let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
    let secs = (now.tv_sec as u64)
        .saturating_add(timeout.as_secs())
        .saturating_add(nanos / 1_000_000_000)
        .min(i64::MAX as u64);
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 in a live mapping for the whole
    // call; `ts` is a valid timespec. EINTR/EAGAIN/ETIMEDOUT just return.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            bit,
        )
    };
    rc == 0
}

/// Wakes at most `n` sleepers on `word` whose bitset intersects `mask`.
fn wake_bitset(word: &AtomicU32, n: i32, mask: u32) {
    // SAFETY: `word` is a valid, aligned u32 in a live mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE_BITSET,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            mask,
        );
    }
}

/// Wakes one sleeper on `word`, whatever value it slept on.
pub(crate) fn wake_one(word: &AtomicU32) {
    wake_bitset(word, 1, u32::MAX);
}

/// Wakes at most `n` sleepers on `word` that slept on a value whose
/// [`generation_bit`] differs from that of `current`.
pub(crate) fn wake_earlier(word: &AtomicU32, n: i32, current: u32) {
    wake_bitset(word, n, !generation_bit(current));
}

/// Wakes every sleeper on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    wake_bitset(word, i32::MAX, u32::MAX);
}

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integers and touches no user memory.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_int) }
}

/// Registers this process for global expedited membarriers (once); true if
/// the kernel supports it.
pub(crate) fn register_global_expedited() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let q = membarrier(MEMBARRIER_CMD_QUERY);
        q >= 0
            && q & MEMBARRIER_CMD_GLOBAL_EXPEDITED as libc::c_long != 0
            && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0
    })
}

/// Forces a full barrier on every running thread of registered processes;
/// false if the call failed (the caller must then not rely on it).
pub(crate) fn global_barrier() -> bool {
    membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
}
