//! Logging through the `log` crate, behind conduit's cargo feature `log`
//! (off by default). With the feature off the calls compile to nothing:
//! their arguments are type-checked but never evaluated. Library code never
//! writes to stdout or stderr itself.

/// Logs at `$level` (`error`, `warn`, `info`, `debug`, `trace`) under the
/// target `conduit::udp`, once per call site and process.
macro_rules! log_once {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "log")]
        {
            static ONCE: ::std::sync::atomic::AtomicBool =
                ::std::sync::atomic::AtomicBool::new(false);
            // Relaxed: the flag only deduplicates a log line, it guards no data.
            if !ONCE.swap(true, ::std::sync::atomic::Ordering::Relaxed) {
                ::log::$level!(target: "conduit::udp", $($arg)+);
            }
        }
        #[cfg(not(feature = "log"))]
        {
            // Uses the arguments (no unused-variable warnings) in a closure
            // that is never called.
            let _ = || {
                let _ = format_args!($($arg)+);
            };
        }
    }};
}

pub(crate) use log_once;

#[cfg(all(test, feature = "log"))]
mod tests {
    use std::sync::Mutex;

    /// Every record logged under `conduit::udp`, as text.
    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.target() == "conduit::udp"
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                LINES
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", r.level(), r.args()));
            }
        }
        fn flush(&self) {}
    }

    /// A call site logs through the `log` crate once per process, however
    /// often it runs; the driver in use is one such line (per kind).
    #[test]
    fn a_call_site_logs_once() {
        static CAPTURE: Capture = Capture;
        log::set_logger(&CAPTURE).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        for i in 0..3 {
            log_once!(warn, "conduit: test line {i}");
        }
        let cfg = super::super::DriverConfig {
            choice: super::super::DriverChoice::Socket,
            ..Default::default()
        };
        for _ in 0..2 {
            super::super::driver::open_driver("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        }
        let lines = LINES.lock().unwrap().clone();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("WARN conduit: test line"))
                .collect::<Vec<_>>(),
            ["WARN conduit: test line 0"]
        );
        let driver_lines = lines
            .iter()
            .filter(|l| *l == "INFO conduit: udp driver socket")
            .count();
        // Once at most: another test of this binary may have opened a
        // driver before the logger was set.
        assert!(driver_lines <= 1, "{lines:?}");
    }
}
