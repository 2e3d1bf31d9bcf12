//! Peak resident set size of this process.

/// Peak RSS of the calling process in KiB since the last [`reset_peak`]:
/// `VmHWM` from `/proc/self/status`, or `getrusage(RUSAGE_SELF).ru_maxrss`
/// (the lifetime peak) where `/proc` is unavailable.
pub fn peak_rss_kib() -> u64 {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(kib) = hwm {
            return kib;
        }
    }
    // SAFETY: `rusage` is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(usage.ru_maxrss).unwrap_or(0)
}

/// Resets this process's peak RSS to its current RSS (Linux: writing `5` to
/// `/proc/self/clear_refs`), so that one run of `compare` does not report the
/// peak of an earlier one. Best effort: without it the peak is the lifetime one.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
