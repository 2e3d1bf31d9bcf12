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

/// Sleeps while `*word == expected`, at most `timeout`.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 in a live mapping for the whole
    // call; `ts` is a valid timespec. EINTR/EAGAIN/ETIMEDOUT just return.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every sleeper on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 in a live mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
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
