//! The benchmark's error type: a message that says what went wrong and where.

use std::fmt;

/// An error that ends a benchmark run, with a human-readable message.
#[derive(Debug)]
pub struct BenchError(pub String);

/// Result alias used throughout the benchmark.
pub type Result<T> = std::result::Result<T, BenchError>;

impl BenchError {
    /// Builds an error from anything printable.
    pub fn msg(m: impl Into<String>) -> Self {
        BenchError(m.into())
    }

    /// Prefixes the message with context (`"context: message"`).
    pub fn context(self, ctx: &str) -> Self {
        BenchError(format!("{ctx}: {}", self.0))
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError(format!("I/O error: {e}"))
    }
}

/// Returns early with a formatted [`BenchError`].
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::BenchError(format!($($arg)*)))
    };
}
