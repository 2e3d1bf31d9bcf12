//! conduit: low-latency messaging over shared memory (`shm:NAME`) and
//! reliable UDP (`udp://HOST:PORT`), with typed zero-copy messages.
#![deny(missing_docs)]

pub mod proto;
