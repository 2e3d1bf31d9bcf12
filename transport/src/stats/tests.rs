use super::*;
use conduit_counters::{parse, Kind, Snapshot};
use conduit_test_util::TempDir;

fn leak(f: StatsFile) -> &'static StatsFile {
    Box::leak(Box::new(f))
}

fn read(f: &StatsFile) -> Snapshot {
    parse(&fs::read(f.path()).unwrap()).unwrap()
}

#[test]
fn file_and_directory_modes() {
    let tmp = TempDir::new("stats-modes");
    let dir = tmp.join("conduit-stats");
    let f = StatsFile::create(&dir, 4242, 4).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o1777);
    assert_eq!(mode(f.path()), 0o644);
    assert_eq!(f.path(), dir.join("4242.stats"));
    let snap = read(&f);
    assert_eq!(
        (snap.pid, snap.slot_count, snap.handles_without_slot),
        (4242, 4, 0)
    );
    assert!(snap.slots.is_empty());
    assert!(snap.start_time_unix_ns > 0);
    assert_eq!(snap.process_name, process_name());
    // Nothing else is left in the directory (the temporary file was renamed).
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn a_stale_file_and_leftover_temporaries_are_replaced() {
    let tmp = TempDir::new("stats-stale");
    let dir = tmp.join("conduit-stats");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("77.stats"), b"garbage of a dead process").unwrap();
    fs::write(dir.join(".77.0.stats.tmp"), b"left over").unwrap();
    let f = StatsFile::create(&dir, 77, 2).unwrap();
    assert_eq!(read(&f).pid, 77);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["77.stats"]);
}

#[test]
fn a_symlink_or_a_file_is_not_a_stats_directory() {
    let tmp = TempDir::new("stats-link");
    let target = tmp.join("elsewhere");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, tmp.join("link")).unwrap();
    assert!(StatsFile::create(&tmp.join("link"), 1, 1).is_err());
    fs::write(tmp.join("file"), b"x").unwrap();
    assert!(StatsFile::create(&tmp.join("file"), 1, 1).is_err());
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
}

#[test]
fn slots_are_handed_out_filled_freed_and_counted_when_missing() {
    let tmp = TempDir::new("stats-slots");
    let f = leak(StatsFile::create(&tmp.join("s"), std::process::id(), 2).unwrap());
    let a = f.open_slot(conduit_counters::KIND_SHM_PUBLICATION, "shm:a", "ring");
    let long = format!("udp://host:1?{}", "x".repeat(400));
    let b = f.open_slot(conduit_counters::KIND_UDP_SUBSCRIPTION, &long, "socket");
    let none = f.open_slot(conduit_counters::KIND_SHM_SUBSCRIPTION, "shm:c", "ring");
    assert_eq!(
        (a.index(), b.index(), none.index()),
        (Some(0), Some(1), None)
    );
    a.writer().traffic(3, 300);
    a.writer().bump(BACK_PRESSURE);
    a.writer().bump(BACK_PRESSURE);
    b.writer().set(DROPS + 5, 9);
    // Stores of a handle without a slot go nowhere.
    none.writer().traffic(1, 1);

    let snap = read(f);
    assert_eq!(snap.handles_without_slot, 1);
    assert_eq!(snap.slots.len(), 2);
    let (sa, sb) = (&snap.slots[0], &snap.slots[1]);
    assert_eq!(
        (sa.kind, sa.uri.as_str(), sa.driver.as_str()),
        (Kind::ShmPublication, "shm:a", "ring")
    );
    assert_eq!(
        (
            sa.counters.messages,
            sa.counters.bytes,
            sa.counters.back_pressure
        ),
        (3, 300, 2)
    );
    assert_eq!(sa.generation, 1);
    assert!(sa.open_time_unix_ns > 0 && sa.counters.heartbeat_unix_ns >= sa.open_time_unix_ns);
    assert_eq!(sa.ring_slot, conduit_counters::NO_RING_SLOT);
    assert_eq!(sb.kind, Kind::UdpSubscription);
    assert_eq!(sb.uri, long[..conduit_counters::URI_LEN - 1]);
    assert_eq!(sb.counters.drops[5], 9);

    // Freed on drop; a reused slot has a new generation and zeroed counters.
    drop(a);
    let snap = read(f);
    assert_eq!(snap.slots.len(), 1);
    assert_eq!(snap.slots[0].index, 1);
    let c = f.open_slot(conduit_counters::KIND_SHM_SUBSCRIPTION, "shm:c", "ring");
    assert_eq!(c.index(), Some(0));
    let snap = read(f);
    let sc = &snap.slots[0];
    assert_eq!(
        (sc.kind, sc.generation, sc.uri.as_str()),
        (Kind::ShmSubscription, 2, "shm:c")
    );
    assert_eq!((sc.counters.messages, sc.counters.back_pressure), (0, 0));
    drop((b, c, none));
    assert!(read(f).slots.is_empty());
}

#[test]
fn instants_convert_to_unix_time() {
    let now = Instant::now();
    assert_eq!(instant_unix_ns(None, now, 1_000), 0);
    assert_eq!(instant_unix_ns(Some(now), now, 1_000), 1_000);
    let earlier = now.checked_sub(Duration::from_nanos(400)).unwrap();
    assert_eq!(instant_unix_ns(Some(earlier), now, 1_000), 600);
    assert_eq!(
        instant_unix_ns(Some(now + Duration::from_nanos(5)), now, 1_000),
        1_005
    );
}

#[test]
fn drop_reason_names_are_the_protocols() {
    for r in crate::proto::DropReason::ALL {
        assert_eq!(conduit_counters::DROP_REASON_NAMES[r as usize], r.name());
    }
    assert_eq!(
        conduit_counters::DROP_REASON_NAMES.len(),
        crate::proto::DROP_REASONS
    );
}
