//! The reliable sequencing protocol, sans-IO.
#![forbid(unsafe_code)]
