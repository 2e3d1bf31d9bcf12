//! The `conduit` API over `shm:`: typed messages, the append-only rule, start
//! order, zero-length messages, claims and bad URIs, through real rings.

use conduit::{Error, Message, Publication, Received, Subscription, ViewError};
use conduit_test_util::{root_or_skip, watchdog, TempDir};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "conduit-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq, Clone, Copy)]
struct OrderV1 {
    id: u64,
    price: i64,
}
impl Message for OrderV1 {
    const TYPE_ID: u32 = 100;
}

/// OrderV1 with a field appended.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq, Clone, Copy)]
struct OrderV2 {
    id: u64,
    price: i64,
    qty: u32,
    _pad: u32,
}
impl Message for OrderV2 {
    const TYPE_ID: u32 = 100;
}

fn poll_all(sub: &mut Subscription, want: usize) -> Vec<(u32, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < want {
        sub.poll(
            |m: Received<'_>| got.push((m.type_id(), m.payload().to_vec())),
            64,
        )
        .unwrap();
    }
    got
}

fn connect(uri: &str) -> (Publication, Subscription) {
    // Subscription first: start order must not matter.
    let mut sub = Subscription::open(uri).unwrap();
    assert!(!sub.is_connected());
    let mut publ = Publication::open(uri).unwrap();
    while !publ.is_connected() {
        sub.poll(|_| {}, 1).unwrap();
        std::thread::yield_now();
    }
    (publ, sub)
}

#[test]
fn typed_messages_and_append_only_rule() {
    let _watchdog = watchdog("typed_messages_and_append_only_rule", 60);
    let uri = format!("shm:{}", unique("typed"));
    let (mut publ, mut sub) = connect(&uri);
    let v2 = OrderV2 {
        id: 1,
        price: -5,
        qty: 7,
        _pad: 0,
    };
    publ.send(&v2).unwrap();
    let v1 = OrderV1 { id: 2, price: 9 };
    publ.send(&v1).unwrap();
    let mut seen = 0;
    while seen < 2 {
        sub.poll(
            |m| {
                // An old reader accepts the newer, longer payload.
                let old = m.get::<OrderV1>().unwrap();
                if seen == 0 {
                    assert_eq!((old.id, old.price), (1, -5));
                    assert_eq!(m.get::<OrderV2>().unwrap(), &v2);
                } else {
                    assert_eq!(old, &v1);
                    // A new reader refuses the shorter payload of an old writer.
                    assert_eq!(
                        m.get::<OrderV2>().unwrap_err(),
                        ViewError::TooShort {
                            need: 24,
                            found: 16
                        }
                    );
                }
                seen += 1;
            },
            8,
        )
        .unwrap();
    }
}

#[test]
fn zero_length_messages_and_claims() {
    let _watchdog = watchdog("zero_length_messages_and_claims", 60);
    let uri = format!("shm:{}", unique("claims"));
    let (mut publ, mut sub) = connect(&uri);
    publ.offer(7, &[]).unwrap();
    let mut c = publ.try_claim(8, 5).unwrap();
    c.as_mut_slice().copy_from_slice(b"hello");
    c.commit();
    publ.try_claim(9, 3).unwrap().abort();
    publ.offer_with(12, 4, |b| b.copy_from_slice(b"with"))
        .unwrap();
    drop(publ.try_claim(10, 3).unwrap()); // dropping aborts
    let mut q = publ.claim::<OrderV1>().unwrap();
    q.id = 11;
    q.price = 12;
    q.commit();
    let got = poll_all(&mut sub, 4);
    assert_eq!(got[0], (7, vec![]));
    assert_eq!(got[1], (8, b"hello".to_vec()));
    assert_eq!(got[2], (12, b"with".to_vec()));
    assert_eq!(got[3].0, 100);
    assert_eq!(got[3].1, OrderV1 { id: 11, price: 12 }.as_bytes());
    let counters = sub.counters();
    assert_eq!(counters.received, 4);
    let mut extra = 0;
    sub.poll(|_| extra += 1, 64).unwrap();
    assert_eq!(extra, 0, "aborted claims must publish nothing");
}

#[test]
fn offer_before_any_subscriber_is_not_connected() {
    let _watchdog = watchdog("offer_before_any_subscriber_is_not_connected", 60);
    let uri = format!("shm:{}", unique("noconn"));
    let mut publ = Publication::open(&uri).unwrap();
    assert!(!publ.is_connected());
    assert!(matches!(publ.offer(1, b"x"), Err(Error::NotConnected)));
    assert_eq!(Error::NotConnected.code(), conduit::code::NOT_CONNECTED);
}

#[test]
fn too_large_is_refused_not_truncated() {
    let _watchdog = watchdog("too_large_is_refused_not_truncated", 60);
    let uri = format!("shm:{}?capacity=64k", unique("large"));
    let (mut publ, _sub) = connect(&uri);
    let max = publ.max_message_len();
    assert!(max >= 64 * 1024 / 8);
    let big = vec![0u8; max + 1];
    match publ.offer(1, &big) {
        Err(Error::MessageTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    publ.offer(1, &big[..max]).unwrap();
}

#[test]
fn bad_uris_and_parameters_get_clear_errors() {
    for (uri, needle) in [
        ("shm:", "name"),
        ("shm:a/b", "name"),
        ("nope:x", "unknown scheme"),
        ("shm:..", "shared-memory name"),
        ("shm:.hidden", "shared-memory name"),
        ("shm:x?capacity=lots", "not a size"),
        ("shm:x?mode=999", "octal"),
        ("shm:x?subscribers=99999999999", "subscribers"),
        ("shm:x?wait=sometimes", "one of"),
        ("shm:x?colour=blue", "unknown parameter"),
        ("shm:x?owners=bob", "not a uid"),
        ("shm:x?owners=1,,2", "not a uid"),
        ("shm:x?owners=-1", "not a uid"),
        ("shm:x?owners=99999999999", "not a uid"),
    ] {
        for open in [
            |u: &str| Publication::open(u).map(|_| ()),
            |u: &str| Subscription::open(u).map(|_| ()),
        ] {
            match open(uri) {
                Err(e @ Error::InvalidUri { .. }) => {
                    assert_eq!(e.code(), conduit::code::INVALID_ARGUMENT);
                    let text = e.to_string();
                    assert!(text.contains(needle), "{uri}: {text}");
                }
                other => panic!("{uri}: expected InvalidUri, got {other:?}"),
            }
        }
    }
}

/// Limits are the ring's: a publication gets a value out of range as
/// `InvalidUri` naming the option; a subscription ignores publication
/// options (the ring header is the truth).
#[test]
fn limits_out_of_range_are_refused_by_the_ring_naming_the_option() {
    for (query, needle) in [
        ("capacity=1000", "capacity: 1000 is not a power of two"),
        ("capacity=128", "capacity: 128 is not a power of two"),
        (
            "max_msg=1g",
            "max_msg: 1073741824 exceeds half the capacity",
        ),
        ("capacity=4k&max_msg=2033", "max_msg: 2033 exceeds"),
        ("subscribers=0", "subscribers: 0 is not 1 to 1024"),
        ("subscribers=1025", "subscribers: 1025 is not 1 to 1024"),
        (
            "mode=400",
            "mode: 400 is not octal file permissions including owner rw",
        ),
        ("mode=1777", "mode: 1777"),
    ] {
        let uri = format!("shm:{}?{query}", unique("limits"));
        match Publication::open(&uri) {
            Err(e @ Error::InvalidUri { .. }) => {
                assert_eq!(e.code(), conduit::code::INVALID_ARGUMENT);
                let text = e.to_string();
                assert!(text.contains(needle), "{uri}: {text}");
            }
            other => panic!("{uri}: expected InvalidUri, got {other:?}"),
        }
        Subscription::open(&uri).unwrap();
    }
    // The limits themselves are accepted.
    let uri = format!(
        "shm:{}?capacity=4k&max_msg=2032&subscribers=1024&mode=660",
        unique("limits")
    );
    let publ = Publication::open(&uri).unwrap();
    assert_eq!(publ.max_message_len(), 2032);
}

/// Each open failure a program acts on is its own variant, with its code.
#[test]
fn open_failures_are_typed() {
    let d = Dir::new("typed");
    let uri = |name: &str, q: &str| format!("shm:{name}?dir={}{q}", d.0.path().display());

    let alive = uri("alive", "&subscribers=1");
    let _publ = Publication::open(&alive).unwrap();
    match Publication::open(&alive) {
        Err(e @ Error::PublisherAlive { pid }) => {
            assert_eq!(pid, std::process::id());
            assert_eq!(e.code(), conduit::code::PUBLISHER_ALIVE);
        }
        other => panic!("expected PublisherAlive, got {other:?}"),
    }

    let _sub = Subscription::open(&alive).unwrap();
    match Subscription::open(&alive) {
        Err(e @ Error::NoFreeSlot { max: 1 }) => {
            assert_eq!(e.code(), conduit::code::NO_FREE_SLOT);
            assert!(e.to_string().contains("subscribers="), "{e}");
        }
        other => panic!("expected NoFreeSlot, got {other:?}"),
    }

    std::fs::write(d.0.join("junk"), [0x5a; 4096]).unwrap();
    for r in [
        Publication::open(&uri("junk", "")).map(|_| ()),
        Subscription::open(&uri("junk", "")).map(|_| ()),
    ] {
        match r {
            Err(e @ Error::NotAChannel) => assert_eq!(e.code(), conduit::code::NOT_A_CHANNEL),
            other => panic!("expected NotAChannel, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(d.0.join("junk")).unwrap(), [0x5a; 4096]);

    // A copy of a live ring, its layout version changed (the u32 after the
    // 8-byte magic).
    std::fs::copy(d.0.join("alive"), d.0.join("old")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.0.join("old"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &7u32.to_le_bytes(), 8).unwrap();
    match Subscription::open(&uri("old", "")) {
        Err(e @ Error::LayoutVersion { found: 7, .. }) => {
            assert_eq!(e.code(), conduit::code::LAYOUT_VERSION);
        }
        other => panic!("expected LayoutVersion, got {other:?}"),
    }
}

/// `Received::position` is where each message's record starts: the
/// position `offer` returned for the message before it.
#[test]
fn received_carries_its_stream_position() {
    let (mut publ, mut sub) = connect(&format!("shm:{}?capacity=4k", unique("position")));
    let mut expected = Vec::new();
    let mut after = None;
    let mut got = Vec::new();
    // Past the end of the ring several times: padding records in between.
    for i in 0..200u32 {
        let payload = vec![i as u8; (i as usize * 37) % 500];
        loop {
            match publ.offer(i, &payload) {
                Ok(pos) => {
                    if let Some(prev) = after {
                        expected.push((i, prev));
                    }
                    after = Some(pos);
                    break;
                }
                Err(Error::BackPressured) => {
                    sub.poll(|m| got.push((m.type_id(), m.position())), 64)
                        .unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    while got.len() < 200 {
        sub.poll(|m| got.push((m.type_id(), m.position())), 64)
            .unwrap();
    }
    assert!(got.iter().all(|(_, p)| p % 32 == 0), "{got:?}");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{got:?}");
    // The message after a padding record starts at the next lap, not where
    // the previous one ended; otherwise a message starts where the last ended.
    for (i, prev_end) in expected {
        let (_, pos) = got[i as usize];
        assert!(
            pos == prev_end || pos % 4096 == 0,
            "message {i}: {pos} vs {prev_end}"
        );
    }
}

/// A fresh directory, removed (and unmounted if a test mounted it) on drop.
struct Dir(TempDir, bool);

impl Dir {
    fn new(tag: &str) -> Dir {
        Dir(TempDir::new(&format!("shm-api-{tag}")), false)
    }

    fn mount_tmpfs(&mut self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(self.0.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount failed");
        self.1 = true;
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
        // The TempDir, dropped next, removes the directory.
    }
}

#[test]
fn rings_of_other_uids_need_owners() {
    let _watchdog = watchdog("rings_of_other_uids_need_owners", 60);
    if !root_or_skip("rings_of_other_uids_need_owners") {
        return;
    }
    let dir = Dir::new("owners");
    let uri = format!("shm:owned?dir={}", dir.0.path().display());
    let mut publ = Publication::open(&uri).unwrap();
    // Hand the ring (and its lock file) to uid 65534, as if that user made it.
    for e in std::fs::read_dir(&dir.0).unwrap().flatten() {
        std::os::unix::fs::chown(e.path(), Some(65534), None).unwrap();
    }
    match Subscription::open(&uri) {
        Err(e @ Error::ForeignOwner { uid: 65534 }) => {
            assert_eq!(e.code(), conduit::code::FOREIGN_OWNER);
            assert!(e.to_string().contains("uid 65534"), "{e}");
        }
        other => panic!("expected ForeignOwner, got {:?}", other.map(|_| ())),
    }
    let mut sub = Subscription::open(&format!("{uri}&owners=1000,65534")).unwrap();
    while !publ.is_connected() {
        sub.poll(|_| {}, 1).unwrap();
        std::thread::yield_now();
    }
    publ.offer(7, b"hello").unwrap();
    assert_eq!(poll_all(&mut sub, 1), vec![(7, b"hello".to_vec())]);

    // A publication whose name another uid squats is told who.
    let squat = dir.0.join("squatted");
    std::fs::write(&squat, b"not yours").unwrap();
    std::os::unix::fs::chown(&squat, Some(65534), None).unwrap();
    match Publication::open(&format!("shm:squatted?dir={}", dir.0.path().display())) {
        Err(Error::ForeignOwner { uid: 65534 }) => {}
        other => panic!("expected ForeignOwner, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_full_directory_is_an_io_error_at_open() {
    let _watchdog = watchdog("a_full_directory_is_an_io_error_at_open", 60);
    if !root_or_skip("a_full_directory_is_an_io_error_at_open") {
        return;
    }
    let mut dir = Dir::new("full");
    dir.mount_tmpfs("512k");
    let uri = format!("shm:big?capacity=4m&dir={}", dir.0.path().display());
    match Publication::open(&uri) {
        Err(e @ Error::Io(_)) => {
            assert_eq!(e.code(), conduit::code::IO_ERROR);
            let Error::Io(io) = &e else { unreachable!() };
            assert_eq!(io.kind(), std::io::ErrorKind::StorageFull, "{e}");
        }
        other => panic!("expected Io(ENOSPC), got {:?}", other.map(|_| ())),
    }
}

#[test]
fn subscriber_count_and_wait_for_subscribers() {
    let _watchdog = watchdog("subscriber_count_and_wait_for_subscribers", 60);
    let uri = format!("shm:{}", unique("count"));
    let mut p = Publication::open(&uri).unwrap();
    assert_eq!(p.subscriber_count(), 0);
    assert_eq!(p.wait_for_subscribers(0, Duration::ZERO).unwrap(), 0);
    assert!(matches!(
        p.wait_for_subscribers(1, Duration::from_millis(5)),
        Err(Error::TimedOut)
    ));
    let joiners = {
        let uri = uri.clone();
        std::thread::spawn(move || {
            let subs: Vec<_> = (0..3).map(|_| Subscription::open(&uri).unwrap()).collect();
            subs
        })
    };
    assert_eq!(
        p.wait_for_subscribers(3, Duration::from_secs(30)).unwrap(),
        3
    );
    let mut subs = joiners.join().unwrap();
    assert_eq!(p.subscriber_count(), 3);
    subs.pop();
    assert_eq!(p.subscriber_count(), 2);
    p.offer(1, b"hi").unwrap();
    for s in &mut subs {
        assert_eq!(poll_all(s, 1), vec![(1, b"hi".to_vec())]);
    }
}

#[test]
fn evicted_and_history_through_the_api() {
    evicted_and_history(1);
}

/// As above with two publications on the channel, taking turns.
#[test]
fn evicted_and_history_with_two_publications() {
    evicted_and_history(2);
}

fn evicted_and_history(publishers: usize) {
    let _watchdog = watchdog("evicted_and_history_through_the_api", 60);
    let name = unique("slowapi");
    let uri = format!(
        "shm:{name}?capacity=4k&max_msg=64&slow=evict&evict_after=10ms&history=2k&publishers={publishers}"
    );
    let mut pubs: Vec<Publication> = (0..publishers)
        .map(|_| Publication::open(&uri).unwrap())
        .collect();
    let mut fast = Subscription::open(&uri).unwrap();
    let mut slow = Subscription::open(&uri).unwrap();
    pubs[0]
        .wait_for_subscribers(2, Duration::from_secs(30))
        .unwrap();
    let mut seq = 0u64;
    // The slow one never polls: it is evicted, the publication goes on.
    while seq < 2000 {
        let p = &mut pubs[seq as usize % publishers];
        match p.offer(1, &seq.to_le_bytes()) {
            Ok(_) => seq += 1,
            Err(Error::BackPressured) => {}
            Err(e) => panic!("{e:?}"),
        }
        fast.poll(|_| {}, usize::MAX).unwrap();
    }
    let mut outcome = None;
    for _ in 0..10_000 {
        let p = &mut pubs[seq as usize % publishers];
        p.offer(1, &seq.to_le_bytes()).unwrap();
        seq += 1;
        fast.poll(|_| {}, usize::MAX).unwrap();
        match slow.poll(|_| {}, usize::MAX) {
            Ok(_) => {}
            Err(e) => {
                outcome = Some(e);
                break;
            }
        }
    }
    let e = outcome.expect("the slow subscription was never told");
    assert!(
        matches!(e, Error::Evicted { missed } if missed > 0),
        "{e:?}"
    );
    assert_eq!(e.code(), conduit::code::EVICTED);
    // A history joiner starts with whole messages from inside the window.
    let mut late = Subscription::open(&format!("{uri}&from=history")).unwrap();
    pubs[0]
        .wait_for_subscribers(3, Duration::from_secs(30))
        .unwrap();
    let mut first = None;
    let mut count = 0;
    late.poll(
        |m| {
            let v = u64::from_le_bytes(m.payload().try_into().unwrap());
            first.get_or_insert(v);
            // Each message names the publication that sent it.
            let want = (v % publishers as u64) as u16;
            assert!(
                matches!(m.source(), Some(conduit::Source::Shm { index, .. }) if publishers == 1 || index == want),
                "message {v} from {:?}",
                m.source()
            );
            count += 1;
        },
        usize::MAX,
    )
    .unwrap();
    let first = first.expect("history was delivered");
    assert_eq!(first + count, seq, "from the window's start to the tail");
    // 32-byte records: about 2k / 32 of them.
    assert!((60..=64).contains(&count), "{count} messages of history");
}
