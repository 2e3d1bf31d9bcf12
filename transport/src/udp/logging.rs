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
