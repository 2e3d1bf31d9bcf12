//! The message of the `publisher` and `subscriber` examples, in one place
//! (each example declares `mod common;`).

use conduit::Message;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The message both examples share. Fields are only ever appended, so a
/// reader built against this struct also accepts quotes from a newer writer
/// that appended fields.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, Clone, Copy)]
pub struct Quote {
    /// Sequence number, from 0.
    pub seq: u64,
    /// Price in ticks.
    pub price: i64,
    /// Quantity.
    pub qty: u32,
    /// 0 = bid, 1 = ask.
    pub side: u8,
    _pad: [u8; 3],
}

impl Message for Quote {
    const TYPE_ID: u32 = 0x5155_4f54; // "QUOT"
}
