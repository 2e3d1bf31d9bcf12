//! `counters_file`: `conduit_counters::parse`, the reader of the per-process
//! counters files that `conduit-stat` reads from a world-writable directory.
//!
//! The first byte picks the input's form: odd, the rest is the whole file;
//! even, the rest follows a valid magic and version (so the fuzzer spends its
//! time on the sizes, counts and strings behind them).
//!
//! Invariants: no panic; an accepted file has only slots in use, at indexes
//! below its slot count, within its length, with capped strings.

use conduit_counters::{parse, ParseError, MAGIC, STATE_IN_USE, URI_LEN};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let file = if form & 1 == 1 {
        rest.to_vec()
    } else {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(rest);
        f
    };
    match parse(&file) {
        Ok(s) => {
            let end = s.header_size as u64 + s.slot_count as u64 * s.slot_size as u64;
            assert!(end <= file.len() as u64, "slots past the end");
            assert!(s.slots.len() <= s.slot_count as usize);
            for slot in &s.slots {
                assert!(slot.index < s.slot_count);
                // Lossy decoding at most triples the bytes before the NUL.
                assert!(slot.uri.len() <= 3 * (URI_LEN - 1));
                let at = (s.header_size as u64 + slot.index as u64 * s.slot_size as u64) as usize;
                assert_eq!(file[at..at + 4], STATE_IN_USE.to_le_bytes());
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if file.len() < 64 {
                assert!(matches!(e, ParseError::Truncated { .. }), "{e:?}");
            }
        }
    }
}

/// Slots in use the reader finds in `data` (for the seed tests).
pub fn slots(data: &[u8]) -> usize {
    let Some((_, rest)) = data.split_first() else {
        return 0;
    };
    parse(rest).map_or(0, |s| s.slots.len())
}
