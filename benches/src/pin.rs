//! CPU pinning: each side of a ping-pong gets its own core where two exist.

use crate::error::{BenchError, Result};

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` and the size passed is its size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return vec![0];
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET reads inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The two CPUs the ping and pong sides run on, or `None` when fewer than two
/// are available (then nothing is pinned and the sides share the CPU).
pub fn ping_pong_cpus() -> Option<(usize, usize)> {
    let cpus = allowed_cpus();
    if cpus.len() >= 2 {
        Some((cpus[0], cpus[1]))
    } else {
        None
    }
}

/// Pins the calling thread to `cpu`.
///
/// # Errors
/// The kernel refused (the CPU is offline or not in the allowed set).
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(BenchError(format!("cpu {cpu} is out of range")));
    }
    // SAFETY: all-zero is a valid empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (checked above), so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(BenchError(format!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Pins the calling thread to `cpu` if one is given; `None` leaves it unpinned.
///
/// # Errors
/// See [`pin_current_thread`].
pub fn pin_optional(cpu: Option<usize>) -> Result<()> {
    match cpu {
        Some(c) => pin_current_thread(c),
        None => Ok(()),
    }
}
