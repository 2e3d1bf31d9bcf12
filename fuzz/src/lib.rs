//! Harnesses of conduit's fuzz targets, one module per target, each with a
//! `run(data)` entry point that the `fuzz_targets/` binaries call and that the
//! tests of this crate replay the seed corpus through.
//!
//! The inputs are programs: a byte reader ([`Input`]) decodes operations
//! (send this datagram, forge that frame with a valid checksum, let time pass,
//! scribble on this word) so the fuzzer reaches the handlers behind the
//! checksum and the handshake instead of spending its time on them.

pub mod counters;
pub mod input;
pub mod net;
pub mod receiver;
pub mod ring;
pub mod seeds;
pub mod sender;
pub mod sessions;
pub mod uri;

pub use input::Input;
