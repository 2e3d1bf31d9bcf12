//! UDP channels: conduit's reliable protocol ([`crate::proto`]) carried over
//! UDP by an io_uring driver or a plain socket driver.
//!
//! The I/O layer lives in the `driver*` modules, the only place in this
//! crate with `unsafe` code.

pub mod driver;
pub mod driver_socket;
pub mod driver_uring;

pub use driver::{
    open_driver, AnyDriver, Driver, DriverChoice, DriverConfig, DriverKind, Transmit, Wait,
};
