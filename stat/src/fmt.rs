//! Human formatting of sizes, rates and durations for the tables.

/// `1536` → `1.5Ki`; below 1024 the plain number.
pub fn bytes(v: u64) -> String {
    scaled(v as f64, 1024.0, &["", "Ki", "Mi", "Gi", "Ti", "Pi"])
}

/// A count with SI prefixes: `1500` → `1.5k`.
pub fn count(v: f64) -> String {
    scaled(v, 1000.0, &["", "k", "M", "G", "T", "P"])
}

fn scaled(mut v: f64, base: f64, units: &[&str]) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let mut i = 0;
    while v.abs() >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    if i == 0 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}{}", units[i])
    }
}

/// Seconds as `850us`, `12ms`, `1.2s`, `3m05s`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "-".into();
    }
    if s < 1e-3 {
        format!("{:.0}us", s * 1e6)
    } else if s < 1.0 {
        format!("{:.0}ms", s * 1e3)
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0}m{:02.0}s", s - m * 60.0)
    }
}

/// A Unix time in nanoseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), or `-` for 0.
pub fn unix_ns(ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(1536), "1.5Ki");
        assert_eq!(bytes(3 << 20), "3.0Mi");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1500.0), "1.5k");
        assert_eq!(secs(0.0005), "500us");
        assert_eq!(secs(0.012), "12ms");
        assert_eq!(secs(1.25), "1.2s");
        assert_eq!(secs(185.0), "3m05s");
        assert_eq!(unix_ns(0), "-");
        assert_eq!(
            unix_ns(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
