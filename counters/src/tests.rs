use super::*;

fn sample() -> Vec<u8> {
    let mut a = Slot::new(
        KIND_SHM_PUBLICATION,
        3,
        11,
        "shm:prices?capacity=1m",
        "ring",
    );
    a.counters.messages.set(5);
    a.counters.bytes.set(500);
    a.counters.drops[2].set(7);
    a.counters.drops_total.set(7);
    let b = Slot::new(KIND_UDP_SUBSCRIPTION, 1, 12, "udp://0.0.0.0:4000", "socket");
    let mut free = Slot::new(KIND_UDP_PUBLICATION, 9, 0, "udp://gone:1", "uring");
    free.state.set(STATE_FREE);
    build_file(&FileHeader::new(1234, 4, 99, "trader"), &[a, free, b])
}

#[test]
fn layout_offsets_are_the_contract() {
    assert_eq!(core::mem::offset_of!(FileHeader, start_time_unix_ns), 32);
    assert_eq!(core::mem::offset_of!(FileHeader, process_name), 40);
    assert_eq!(core::mem::offset_of!(Slot, open_time_unix_ns), 16);
    assert_eq!(core::mem::offset_of!(Slot, uri), 24);
    assert_eq!(core::mem::offset_of!(Slot, driver), 280);
    assert_eq!(core::mem::offset_of!(SlotCounters, drops), 13 * 8);
    assert_eq!(
        core::mem::offset_of!(SlotCounters, heartbeat_unix_ns),
        (13 + 32 + 7) * 8
    );
    assert_eq!(&sample()[..8], b"CDTSTAT\0");
}

#[test]
fn parses_slots_in_use() {
    let s = parse(&sample()).unwrap();
    assert_eq!((s.pid, s.slot_count, s.start_time_unix_ns), (1234, 4, 99));
    assert_eq!(s.process_name, "trader");
    assert_eq!(s.slots.len(), 2);
    let a = &s.slots[0];
    assert_eq!(
        (a.index, a.kind, a.generation),
        (0, Kind::ShmPublication, 3)
    );
    assert_eq!(a.uri, "shm:prices?capacity=1m");
    assert_eq!(a.driver, "ring");
    assert_eq!(a.ring_slot, NO_RING_SLOT);
    assert_eq!((a.counters.messages, a.counters.bytes), (5, 500));
    assert_eq!(
        a.counters.drops_by_reason().nth(2),
        Some(("unknown_type", 7))
    );
    let b = &s.slots[1];
    assert_eq!(
        (b.index, b.kind, b.open_time_unix_ns),
        (2, Kind::UdpSubscription, 12)
    );
    assert_eq!(b.kind.role(), "subscription");
    assert_eq!(b.kind.transport(), "udp");
}

#[test]
fn larger_sizes_are_read_by_their_v1_prefix() {
    // A newer writer with a 128-byte header and 2048-byte slots.
    let mut h = FileHeader::new(5, 2, 0, "p");
    h.header_size.set(128);
    h.slot_size.set(2048);
    let mut bytes = h.as_bytes().to_vec();
    bytes.resize(128, 0xee);
    let mut s = Slot::new(KIND_UDP_PUBLICATION, 1, 0, "udp://h:9", "socket");
    s.counters.rtt_ns.set(1000);
    bytes.extend_from_slice(s.as_bytes());
    bytes.resize(128 + 2048, 0xee);
    bytes.extend_from_slice(Slot::new_zeroed().as_bytes());
    bytes.resize(128 + 2 * 2048, 0);
    let snap = parse(&bytes).unwrap();
    assert_eq!(snap.slots.len(), 1);
    assert_eq!(snap.slots[0].counters.rtt_ns, 1000);
    // Trailing bytes after the slots are allowed.
    bytes.extend_from_slice(&[1, 2, 3]);
    assert!(parse(&bytes).is_ok());
}

#[test]
fn bad_files_are_typed_errors() {
    let good = sample();
    assert!(matches!(
        parse(&[]),
        Err(ParseError::Truncated { needed: 64, len: 0 })
    ));
    assert!(matches!(
        parse(&good[..63]),
        Err(ParseError::Truncated { .. })
    ));
    assert!(matches!(
        parse(&good[..good.len() - 1]),
        Err(ParseError::Truncated { .. })
    ));

    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(parse(&b), Err(ParseError::BadMagic));

    let mut b = good.clone();
    b[8] = 2;
    assert_eq!(
        parse(&b),
        Err(ParseError::UnsupportedVersion { version: 2 })
    );

    let mut b = good.clone();
    b[12..16].copy_from_slice(&32u32.to_le_bytes());
    assert_eq!(
        parse(&b),
        Err(ParseError::BadSize {
            field: "header_size",
            value: 32
        })
    );

    let mut b = good.clone();
    b[16..20].copy_from_slice(&512u32.to_le_bytes());
    assert_eq!(
        parse(&b),
        Err(ParseError::BadSize {
            field: "slot_size",
            value: 512
        })
    );

    // slot_count * slot_size overflowing the file (and u32).
    let mut b = good.clone();
    b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(parse(&b), Err(ParseError::Truncated { .. })));
    let mut b = good.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(parse(&b), Err(ParseError::Truncated { .. })));

    // A URI filling its 256 bytes with no NUL.
    let mut b = good.clone();
    let uri = 64 + 24;
    b[uri..uri + URI_LEN].fill(b'a');
    assert_eq!(
        parse(&b),
        Err(ParseError::BadString {
            slot: Some(0),
            field: "uri"
        })
    );
    let mut b = good.clone();
    b[64 + 280..64 + 296].fill(b'd');
    assert_eq!(
        parse(&b),
        Err(ParseError::BadString {
            slot: Some(0),
            field: "driver"
        })
    );
    let mut b = good.clone();
    b[40..56].fill(b'p');
    assert_eq!(
        parse(&b),
        Err(ParseError::BadString {
            slot: None,
            field: "process_name"
        })
    );
    // ... but a free slot's strings are not read.
    let mut b = good;
    b[64 + 1024 + 24..64 + 1024 + 280].fill(b'a');
    assert!(parse(&b).is_ok());
}

#[test]
fn strings_are_lossy_and_capped() {
    let long = "é".repeat(300);
    let mut s = Slot::new(
        KIND_SHM_SUBSCRIPTION,
        1,
        0,
        &long,
        "a-driver-name-longer-than-16",
    );
    assert_eq!(s.uri[URI_LEN - 1], 0);
    let whole = parse(&build_file(&FileHeader::new(1, 1, 0, "p"), &[s.clone()])).unwrap();
    // 127 two-byte characters (254 bytes) fit before the NUL.
    assert_eq!(whole.slots[0].uri, "é".repeat(127));
    s.uri[0] = 0xff;
    let snap = parse(&build_file(&FileHeader::new(1, 1, 0, "p"), &[s])).unwrap();
    let uri = &snap.slots[0].uri;
    assert!(uri.starts_with('\u{fffd}'));
    assert_eq!(snap.slots[0].driver, "a-driver-name-l");
    assert!(uri.len() <= 3 * (URI_LEN - 1));
    assert_eq!(encode_str(&mut [], "x"), 0);
    let mut one = [9u8; 1];
    assert_eq!(encode_str(&mut one, "x"), 0);
    assert_eq!(one, [0]);
}

#[test]
fn unknown_kind_and_state_are_tolerated() {
    let mut a = Slot::new(9, 1, 0, "x", "y");
    let mut b = Slot::new(KIND_SHM_PUBLICATION, 1, 0, "x", "y");
    b.state.set(7);
    a.counters.messages.set(1);
    let snap = parse(&build_file(&FileHeader::new(1, 2, 0, "p"), &[a, b])).unwrap();
    assert_eq!(snap.slots.len(), 1);
    assert_eq!(snap.slots[0].kind, Kind::Unknown(9));
    assert_eq!(snap.slots[0].kind.raw(), 9);
    for k in 1..=4 {
        assert_eq!(Kind::from_raw(k).raw(), k);
    }
}

#[test]
fn file_names() {
    assert_eq!(file_name(7), "7.stats");
    assert_eq!(pid_from_file_name("7.stats"), Some(7));
    for bad in [
        "0.stats",
        ".stats",
        "7.stat",
        "x.stats",
        "99999999999.stats",
        "7.stats.tmp",
        "-1.stats",
    ] {
        assert_eq!(pid_from_file_name(bad), None, "{bad}");
    }
    assert_eq!(stats_dir(Path::new("/x")), Path::new("/x/conduit-stats"));
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random bytes, every truncation of a valid file, and random mutations of
/// it: never a panic, and only what the bytes allow.
#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let len = (rng.next() % 3000) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = parse(&bytes);
        // With a valid magic and version, the header sizes are random.
        let mut b = bytes;
        if b.len() >= 12 {
            b[..8].copy_from_slice(&MAGIC);
            b[8..12].copy_from_slice(&1u32.to_le_bytes());
            let _ = parse(&b);
        }
    }
    let good = sample();
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "{n}");
    }
    let mut ok = 0;
    for _ in 0..5000 {
        let mut b = good.clone();
        for _ in 0..(rng.next() % 8 + 1) {
            let at = (rng.next() % b.len() as u64) as usize;
            b[at] = rng.next() as u8;
        }
        if let Ok(s) = parse(&b) {
            ok += 1;
            assert!(s.slots.len() <= s.slot_count as usize);
            for slot in &s.slots {
                assert!(slot.uri.len() <= 3 * URI_LEN);
                assert!(slot.index < s.slot_count);
            }
        }
    }
    assert!(ok > 0, "no mutation kept the file valid");
}
