//! The sender's log: a ring of wire-format records addressed by 64-bit stream positions.
//!
//! Records are 8-aligned and never straddle the end of the ring (a padding record fills the
//! rest instead), so every run of records between two positions is one contiguous slice that
//! goes on the wire as it is. A bitmap marks where records start, so a position a peer asks
//! for can be checked to be a record boundary before anything is sent from it.

use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

use super::frame::{self, RecordHeader, RECORD_HEADER_LEN};

/// `n` zeroed words, every page of them already written once.
///
/// Fresh zeroed memory is mapped lazily: without this, the first pass of
/// the log through its memory takes a page fault every 4 KiB (a few µs
/// each, under a hypervisor more), which was most of a UDP ping-pong's
/// p99 until some 100 k messages had gone by. Memory is committed up
/// front instead, as the documented memory bound already counts it.
pub(crate) fn committed(n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    for w in v.iter_mut().step_by(4096 / 8) {
        // The value is zero, hidden from the optimiser, which would
        // otherwise drop a store of zero into freshly zeroed memory.
        *w = std::hint::black_box(0);
    }
    v
}

/// Ring of records.
#[derive(Debug)]
pub(crate) struct Log {
    words: Vec<u64>,
    starts: Vec<u64>,
    mask: usize,
}

impl Log {
    /// A log of `capacity` bytes (a power of two, multiple of 8).
    pub(crate) fn new(capacity: usize) -> Log {
        Log {
            words: committed(capacity / 8),
            starts: committed(capacity.div_ceil(512)),
            mask: capacity - 1,
        }
    }

    /// Capacity in bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Offset of `pos` in the ring.
    #[inline]
    pub(crate) fn offset(&self, pos: u64) -> usize {
        pos as usize & self.mask
    }

    /// Bytes from `pos` to the end of the ring.
    #[inline]
    pub(crate) fn room_before_end(&self, pos: u64) -> usize {
        self.capacity() - self.offset(pos)
    }

    /// The ring's bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        self.words.as_bytes()
    }

    /// `len` bytes of the ring from byte offset `start`, to fill in place.
    #[inline]
    pub(crate) fn bytes_mut_range(&mut self, start: usize, len: usize) -> &mut [u8] {
        &mut self.words.as_mut_bytes()[start..start + len]
    }

    /// Writes a record header at `pos` and marks `pos` as a record start; returns the payload
    /// slice of `len` bytes (the record must fit before the end of the ring).
    #[inline(always)]
    pub(crate) fn write_record(
        &mut self,
        pos: u64,
        flags: u8,
        type_id: u32,
        len: usize,
    ) -> &mut [u8] {
        let off = self.offset(pos);
        let size = if flags & frame::REC_PAD != 0 {
            RECORD_HEADER_LEN + len
        } else {
            frame::record_size(len)
        };
        self.mark(off, size);
        let h = RecordHeader {
            len: U16::new(len as u16),
            flags,
            reserved: 0,
            type_id: U32::new(type_id),
        };
        let bytes = self.words.as_mut_bytes();
        bytes[off..off + RECORD_HEADER_LEN].copy_from_slice(h.as_bytes());
        let start = off + RECORD_HEADER_LEN;
        if flags & frame::REC_PAD != 0 {
            &mut bytes[start..start]
        } else {
            &mut bytes[start..start + len]
        }
    }

    #[inline(always)]
    fn mark(&mut self, off: usize, size: usize) {
        let b = off >> 3;
        let n = size >> 3;
        let at = b & 63;
        if at + n < 64 {
            // Common case: the record's bits lie in one word.
            let w = &mut self.starts[b >> 6];
            *w = (*w & !(((1u64 << n) - 1) << at)) | (1 << at);
            return;
        }
        self.mark_slow(off, size);
    }

    fn mark_slow(&mut self, off: usize, size: usize) {
        let mut bit = off >> 3;
        let mut n = size >> 3;
        while n > 0 {
            let word = bit >> 6;
            let at = bit & 63;
            let take = n.min(64 - at);
            let m = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << at
            };
            self.starts[word] &= !m;
            bit += take;
            n -= take;
        }
        let b = off >> 3;
        self.starts[b >> 6] |= 1 << (b & 63);
    }

    /// Whether a record starts at `pos` (meaningful for positions the ring still holds).
    #[inline]
    pub(crate) fn is_record_start(&self, pos: u64) -> bool {
        if pos & 7 != 0 {
            return false;
        }
        let b = self.offset(pos) >> 3;
        self.starts[b >> 6] & (1 << (b & 63)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident memory of this process in KiB (Linux), if readable.
    fn rss_kib() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    #[test]
    fn log_memory_is_committed_up_front() {
        const MIB: usize = 1 << 20;
        let Some(before) = rss_kib() else {
            eprintln!("skipped: /proc/self/status not readable");
            return;
        };
        let log = Log::new(64 * MIB);
        let after = rss_kib().expect("readable a moment ago");
        // Lazily mapped memory would leave RSS where it was.
        assert!(
            after >= before + 60 * 1024,
            "RSS {before} KiB -> {after} KiB for a 64 MiB log"
        );
        assert!(log.bytes().iter().step_by(4096).all(|&b| b == 0));
    }

    #[test]
    fn records_and_starts() {
        let mut log = Log::new(1024);
        log.write_record(0, frame::REC_BEGIN | frame::REC_END, 7, 5)
            .copy_from_slice(b"hello");
        assert!(log.is_record_start(0));
        assert!(!log.is_record_start(8));
        let h = frame::Records::in_log(log.bytes())
            .next()
            .unwrap()
            .unwrap()
            .header;
        assert_eq!(h.len.get(), 5);
        assert_eq!(h.type_id.get(), 7);
        // The sender's walk: the message, then padding to the end of the ring.
        log.write_record(16, frame::REC_PAD, 0, 1000);
        let spans: Vec<u64> = frame::Records::in_log(log.bytes())
            .map(|r| r.unwrap().span())
            .collect();
        assert_eq!(spans, [16, 1008]);
        log.write_record(0, frame::REC_PAD, 0, 1016);
        log.write_record(8, 0, 0, 100);
        assert!(log.is_record_start(8));
        log.write_record(0, frame::REC_BEGIN, 1, 200);
        assert!(!log.is_record_start(8));
    }
}
