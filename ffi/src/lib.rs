//! C ABI for conduit.
#![deny(missing_docs)]
