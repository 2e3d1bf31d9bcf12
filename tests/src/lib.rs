//! Helpers shared by the system tests and their helper binaries: those of
//! the whole workspace (`conduit-test-util`), re-exported.

pub use conduit_test_util::*;
