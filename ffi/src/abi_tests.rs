//! Tests of the ABI's checks (most need no channel): the panic boundary,
//! thread-local errors, NULL and malformed arguments.

use crate::boundary::guard;
use crate::failure::Failure;
use crate::*;
use conduit_test_util::{free_udp_port, free_udp_ports, root_or_skip, TempDir};
use std::ffi::{c_char, CStr};

fn last_error() -> String {
    // SAFETY: conduit_last_error returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(conduit_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn text(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the library's static strings are NUL-terminated.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn a_panic_becomes_internal_with_its_message() {
    let code = guard(
        "conduit_test_fn",
        |code| code,
        || -> Result<i32, Failure> { panic!("boom {}", 42) },
    );
    assert_eq!(code, CONDUIT_INTERNAL);
    let message = last_error();
    assert!(
        message.starts_with("conduit_test_fn: internal error"),
        "{message}"
    );
    assert!(message.contains("panicked: boom 42"), "{message}");

    let ptr = guard(
        "conduit_test_ptr",
        |_| std::ptr::null::<u8>(),
        || panic!("static"),
    );
    assert!(ptr.is_null());
    assert!(last_error()
        .contains("conduit_test_ptr: internal error (a bug in conduit): panicked: static"));
}

#[test]
fn last_error_is_per_thread_and_kept_across_successes() {
    std::thread::spawn(|| assert_eq!(last_error(), ""))
        .join()
        .unwrap();
    // SAFETY: NULL is a valid argument.
    assert!(unsafe { conduit_publication_open(std::ptr::null()) }.is_null());
    assert_eq!(last_error(), "conduit_publication_open: uri is NULL");
    std::thread::spawn(|| {
        // SAFETY: NULL is a valid argument.
        let code = unsafe { conduit_claim_commit(std::ptr::null_mut()) };
        assert_eq!(code, CONDUIT_INVALID_ARGUMENT);
        assert_eq!(last_error(), "conduit_claim_commit: claim is NULL");
    })
    .join()
    .unwrap();
    assert!(!conduit_version().is_null());
    assert_eq!(last_error(), "conduit_publication_open: uri is NULL");
}

#[test]
fn retryable_failures_render_lazily() {
    crate::last_error::record(
        "conduit_publication_offer",
        conduit::Error::BackPressured.into(),
    );
    assert!(last_error().starts_with("conduit_publication_offer: back-pressured"));
    // The rendered string stays put until the next failure.
    let a = conduit_last_error();
    assert_eq!(a, conduit_last_error());
}

#[test]
fn null_handles_are_invalid_arguments() {
    let mut claim = conduit_claim::EMPTY;
    let mut counters = conduit_counters::default();
    // SAFETY: every pointer is NULL or valid; NULL handles are valid arguments.
    unsafe {
        let null_pub = std::ptr::null_mut::<conduit_publication>();
        let null_sub = std::ptr::null_mut::<conduit_subscription>();
        assert_eq!(
            conduit_publication_offer(null_pub, 1, std::ptr::null(), 0),
            -4
        );
        assert_eq!(
            last_error(),
            "conduit_publication_offer: publication is NULL"
        );
        assert_eq!(
            conduit_publication_try_claim(null_pub, 1, 0, &mut claim),
            -4
        );
        assert_eq!(conduit_publication_is_connected(null_pub), 0);
        assert_eq!(conduit_publication_flush(null_pub, 0), -4);
        assert_eq!(conduit_publication_max_message_len(null_pub), -4);
        assert_eq!(conduit_publication_counters(null_pub, &mut counters), -4);
        assert!(conduit_publication_driver(null_pub).is_null());
        conduit_publication_close(null_pub);
        extern "C" fn nothing(_: *mut std::ffi::c_void, _: u32, _: *const u8, _: usize) {}
        assert_eq!(
            conduit_subscription_poll(null_sub, Some(nothing), std::ptr::null_mut(), 1),
            -4
        );
        assert_eq!(
            last_error(),
            "conduit_subscription_poll: subscription is NULL"
        );
        assert_eq!(
            conduit_subscription_poll_timeout(null_sub, None, std::ptr::null_mut(), 1, 0),
            -4
        );
        assert_eq!(conduit_subscription_is_connected(null_sub), 0);
        assert_eq!(conduit_subscription_counters(null_sub, &mut counters), -4);
        assert!(conduit_subscription_driver(null_sub).is_null());
        conduit_subscription_close(null_sub);
        assert_eq!(conduit_claim_commit(&mut claim), -4);
        assert!(
            last_error().contains("claim is not open"),
            "{}",
            last_error()
        );
        assert_eq!(conduit_claim_abort(&mut claim), -4);
    }
}

#[test]
fn malformed_uris_are_refused_with_a_message() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"shm:caf\xc3\0",
            "not valid UTF-8 (invalid byte at offset 7)",
        ),
        (b"nope:x\0", "invalid channel URI"),
        (b"shm:\0", "invalid channel URI"),
        (b"shm:a/b\0", "invalid channel URI"),
        (b"shm:x?what=1\0", "what"),
    ];
    for (uri, needle) in cases {
        // SAFETY: each case is NUL-terminated.
        let p = unsafe { conduit_publication_open(uri.as_ptr().cast()) };
        assert!(p.is_null());
        assert!(last_error().contains(needle), "{uri:?}: {}", last_error());
        // SAFETY: as above.
        let s = unsafe { conduit_subscription_open(uri.as_ptr().cast()) };
        assert!(s.is_null());
        assert!(last_error().contains(needle), "{uri:?}: {}", last_error());
    }
    // A limit out of range is the ring's to refuse: at publication open,
    // naming the URI option (a subscription ignores publication options).
    // SAFETY: NUL-terminated.
    let p = unsafe { conduit_publication_open(c"shm:x?capacity=3".as_ptr()) };
    assert!(p.is_null());
    assert_eq!(conduit_last_status(), CONDUIT_INVALID_ARGUMENT);
    assert!(
        last_error().contains("capacity: 3 is not a power of two"),
        "{}",
        last_error()
    );
    // Longer than the limit: refused without scanning past it.
    let mut long = vec![b'a'; 5000];
    long[..4].copy_from_slice(b"shm:");
    // No NUL at all within the first 1025 bytes; the buffer is 5000 bytes.
    // SAFETY: strnlen reads at most 1025 bytes of the 5000.
    assert!(unsafe { conduit_publication_open(long.as_ptr().cast()) }.is_null());
    assert!(last_error().contains("longer than 1024 bytes"));
}

#[test]
fn argument_checks() {
    assert!(crate::args::length("message", usize::MAX).is_err());
    assert!(crate::args::length("message", isize::MAX as usize).is_ok());
    // SAFETY: NULL with len 0 is valid; NULL with len 3 is refused unread.
    unsafe {
        assert_eq!(
            crate::args::bytes(std::ptr::null(), 0).unwrap(),
            &[] as &[u8]
        );
        assert!(crate::args::bytes(std::ptr::null(), 3).is_err());
    }
    assert!(crate::args::limit(0).is_err());
    assert!(crate::args::limit(-1).is_err());
    assert_eq!(crate::args::limit(7).unwrap(), 7);
    assert!(crate::args::timeout_ms("t", -1).is_err());
    assert_eq!(
        crate::args::timeout_ms("t", i64::MAX).unwrap().as_millis(),
        i64::MAX as u128
    );
}

#[test]
fn static_strings() {
    assert_eq!(text(conduit_version()), env!("CARGO_PKG_VERSION"));
    assert_eq!(text(conduit_status_string(0)), "CONDUIT_OK");
    assert_eq!(
        text(conduit_status_string(CONDUIT_PEER_GONE)),
        "CONDUIT_PEER_GONE"
    );
    assert_eq!(
        text(conduit_status_string(CONDUIT_FOREIGN_OWNER)),
        "CONDUIT_FOREIGN_OWNER"
    );
    assert_eq!(text(conduit_status_string(-99)), "CONDUIT_UNKNOWN_STATUS");
    for code in -21..=0 {
        assert_ne!(text(conduit_status_string(code)), "CONDUIT_UNKNOWN_STATUS");
    }
    for (code, name) in [
        (CONDUIT_SESSION_REFUSED, "CONDUIT_SESSION_REFUSED"),
        (CONDUIT_SESSION_REPLACED, "CONDUIT_SESSION_REPLACED"),
        (CONDUIT_MTU_MISMATCH, "CONDUIT_MTU_MISMATCH"),
        (CONDUIT_KEY_MISMATCH, "CONDUIT_KEY_MISMATCH"),
        (CONDUIT_PUBLISHER_ALIVE, "CONDUIT_PUBLISHER_ALIVE"),
        (CONDUIT_NO_FREE_SLOT, "CONDUIT_NO_FREE_SLOT"),
        (CONDUIT_LAYOUT_VERSION, "CONDUIT_LAYOUT_VERSION"),
        (CONDUIT_NOT_A_CHANNEL, "CONDUIT_NOT_A_CHANNEL"),
        (CONDUIT_EVICTED, "CONDUIT_EVICTED"),
        (CONDUIT_TOO_MANY_PUBLISHERS, "CONDUIT_TOO_MANY_PUBLISHERS"),
    ] {
        assert_eq!(text(conduit_status_string(code)), name);
    }
}

/// Each `shm:` open failure a program can act on has its own status, left
/// readable by `conduit_last_status()` when the open returns NULL.
#[test]
fn failed_opens_leave_their_status() {
    std::thread::spawn(|| assert_eq!(conduit_last_status(), CONDUIT_OK))
        .join()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("conduit-abi-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uri = |name: &str, query: &str| format!("shm:{name}?dir={}{query}\0", dir.display());
    // SAFETY: NUL-terminated URIs; the handles are closed below.
    unsafe {
        assert!(conduit_publication_open(std::ptr::null()).is_null());
        assert_eq!(conduit_last_status(), CONDUIT_INVALID_ARGUMENT);

        // A second publication of a live name.
        let one = uri("alive", "&subscribers=1");
        let p = conduit_publication_open(one.as_ptr().cast());
        assert!(!p.is_null(), "{}", last_error());
        assert!(conduit_publication_open(one.as_ptr().cast()).is_null());
        assert_eq!(conduit_last_status(), CONDUIT_PUBLISHER_ALIVE);
        let pid = std::process::id().to_string();
        assert!(last_error().contains(&pid), "{}", last_error());
        // Successful calls leave the status alone.
        assert_eq!(conduit_publication_is_connected(p), 0);
        assert_eq!(conduit_last_status(), CONDUIT_PUBLISHER_ALIVE);

        // Every subscriber slot taken.
        let s = conduit_subscription_open(one.as_ptr().cast());
        assert!(!s.is_null(), "{}", last_error());
        assert!(conduit_subscription_open(one.as_ptr().cast()).is_null());
        assert_eq!(conduit_last_status(), CONDUIT_NO_FREE_SLOT);
        assert!(last_error().contains("all 1 are taken"), "{}", last_error());
        conduit_subscription_close(s);
        conduit_publication_close(p);

        // A file that is not a ring: refused by both ends, left alone.
        std::fs::write(dir.join("junk"), vec![7u8; 8192]).unwrap();
        let junk = uri("junk", "");
        assert!(conduit_subscription_open(junk.as_ptr().cast()).is_null());
        assert_eq!(conduit_last_status(), CONDUIT_NOT_A_CHANNEL);
        assert!(conduit_publication_open(junk.as_ptr().cast()).is_null());
        assert_eq!(conduit_last_status(), CONDUIT_NOT_A_CHANNEL);
        assert_eq!(std::fs::read(dir.join("junk")).unwrap(), vec![7u8; 8192]);

        // A ring of another layout version (the u32 after the magic): a
        // copy of a live ring, patched.
        let old = uri("old", "");
        let p = conduit_publication_open(old.as_ptr().cast());
        assert!(!p.is_null(), "{}", last_error());
        std::fs::copy(dir.join("old"), dir.join("old2")).unwrap();
        conduit_publication_close_linger(p, 0);
        std::fs::rename(dir.join("old2"), dir.join("old")).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("old"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &99u32.to_le_bytes(), 8).unwrap();
        assert!(conduit_subscription_open(old.as_ptr().cast()).is_null());
        assert_eq!(conduit_last_status(), CONDUIT_LAYOUT_VERSION);
        assert!(
            last_error().contains("layout version 99"),
            "{}",
            last_error()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_foreign_pointer_is_not_a_handle() {
    // Any 8 readable bytes without the marker are refused.
    let junk = [0u64; 4];
    let p = junk.as_ptr() as *mut conduit_publication;
    // SAFETY: the first 8 bytes are readable; the marker check refuses them.
    let code = unsafe { conduit_publication_offer(p, 1, std::ptr::null(), 0) };
    assert_eq!(code, -4);
    assert!(last_error().contains("not a live publication handle"));
    let s = junk.as_ptr() as *mut conduit_subscription;
    // SAFETY: as above.
    assert_eq!(unsafe { conduit_subscription_is_connected(s) }, 0);
    assert!(last_error().contains("not a live subscription handle"));
}

#[test]
fn counters_honour_the_callers_size() {
    let tmp = TempDir::new("abi-counters");
    let dir = tmp.path();
    let uri = format!("shm:counters?dir={}\0", dir.display());
    // SAFETY: NUL-terminated URI; the handles are closed below.
    unsafe {
        let p = conduit_publication_open(uri.as_ptr().cast());
        let s = conduit_subscription_open(uri.as_ptr().cast());
        assert!(!p.is_null() && !s.is_null(), "{}", last_error());
        let mut sent = false;
        for _ in 0..10_000 {
            if conduit_publication_offer(p, 1, b"x".as_ptr().cast(), 1) >= 0 {
                sent = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        assert!(sent, "{}", last_error());

        let mut full = conduit_counters {
            size: size_of::<conduit_counters>() as u32,
            ..Default::default()
        };
        assert_eq!(conduit_publication_counters(p, &mut full), 0);
        assert_eq!(full.sent, 1);
        assert_eq!(full.size as usize, size_of::<conduit_counters>());
        assert_eq!((full.datagrams_sent, full.datagrams_received), (0, 0));

        // An older, shorter struct: only what fits is written.
        let mut old = [0xAAu8; size_of::<conduit_counters>()];
        old[..4].copy_from_slice(&16u32.to_ne_bytes());
        assert_eq!(conduit_publication_counters(p, old.as_mut_ptr().cast()), 0);
        assert_eq!(u64::from_ne_bytes(old[8..16].try_into().unwrap()), 1);
        assert!(old[16..].iter().all(|&b| b == 0xAA), "wrote past size");

        let mut unset = conduit_counters::default();
        assert_eq!(
            conduit_subscription_counters(s, &mut unset),
            CONDUIT_INVALID_ARGUMENT
        );
        assert!(last_error().contains("out->size is 0"), "{}", last_error());

        conduit_subscription_close(s);
        conduit_publication_close(p);
    }
}

#[test]
fn a_stale_claim_of_a_closed_publication_never_commits_a_new_handles_claim() {
    let tmp = TempDir::new("abi-stale");
    let dir = tmp.path();
    let uri = format!("shm:stale?dir={}\0", dir.display());
    extern "C" fn ignore(_: *mut std::ffi::c_void, _: u32, _: *const u8, _: usize) {}
    let claim = |p: *mut conduit_publication, s: *mut conduit_subscription| {
        let mut c = conduit_claim::EMPTY;
        for _ in 0..10_000 {
            // SAFETY: a live subscription; the handler ignores its arguments.
            unsafe { conduit_subscription_poll(s, Some(ignore), std::ptr::null_mut(), 16) };
            // SAFETY: a live publication and a writable claim.
            if unsafe { conduit_publication_try_claim(p, 1, 8, &mut c) } == 0 {
                return c;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        panic!("no claim: {}", last_error());
    };
    // SAFETY: NUL-terminated URI; every handle is closed below, and the
    // stale claim is only used while a live handle sits at its address.
    unsafe {
        let s = conduit_subscription_open(uri.as_ptr().cast());
        assert!(!s.is_null(), "{}", last_error());
        let a = conduit_publication_open(uri.as_ptr().cast());
        assert!(!a.is_null(), "{}", last_error());
        let mut c = claim(a, s);
        let stale = c;
        assert_eq!(conduit_claim_commit(&mut c), 0);
        conduit_publication_close(a);
        // The allocator normally hands the same address to the next handle
        // of the same size; try a few times.
        let mut reused = None;
        let mut others = Vec::new();
        for _ in 0..16 {
            let b = conduit_publication_open(uri.as_ptr().cast());
            assert!(!b.is_null(), "{}", last_error());
            if b == a {
                reused = Some(b);
                break;
            }
            others.push(b);
            conduit_publication_close(others.pop().unwrap());
        }
        let Some(b) = reused else {
            eprintln!("skipping: no publication handle reused the closed one's address");
            conduit_subscription_close(s);
            return;
        };
        let mut open = claim(b, s);
        let mut stale = stale;
        assert_eq!(conduit_claim_commit(&mut stale), CONDUIT_INVALID_ARGUMENT);
        assert!(last_error().contains("not open"), "{}", last_error());
        // The new handle's claim is still open and commits.
        assert_eq!(conduit_claim_commit(&mut open), 0);
        conduit_publication_close(b);
        conduit_subscription_close(s);
    }
}

#[test]
fn a_full_directory_and_a_foreign_ring_fail_open_with_a_message() {
    if !root_or_skip("a_full_directory_and_a_foreign_ring_fail_open_with_a_message") {
        return;
    }
    let tmp = TempDir::new("abi-full");
    let dir = tmp.path().to_path_buf();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(mounted, "mount failed");
    /// Unmounts the directory (which `tmp` then removes), also when the test fails.
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let big = format!("shm:big?capacity=4m&dir={}\0", dir.display());
    let small = format!("shm:small?capacity=4k&dir={}\0", dir.display());
    // SAFETY: NUL-terminated URIs; the handles are closed below.
    unsafe {
        let p = conduit_publication_open(big.as_ptr().cast());
        assert!(p.is_null());
        let e = last_error();
        assert!(
            e.contains("I/O error") && e.contains("No space left"),
            "{e}"
        );

        let p = conduit_publication_open(small.as_ptr().cast());
        assert!(!p.is_null(), "{}", last_error());
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            std::os::unix::fs::chown(f.path(), Some(65534), None).unwrap();
        }
        let s = conduit_subscription_open(small.as_ptr().cast());
        assert!(s.is_null());
        let e = last_error();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let owners = format!("shm:small?capacity=4k&owners=65534&dir={}\0", dir.display());
        let s = conduit_subscription_open(owners.as_ptr().cast());
        assert!(!s.is_null(), "{}", last_error());
        conduit_subscription_close(s);
        conduit_publication_close(p);
    }
}

#[test]
fn keyed_udp_uris_open_and_carry_messages_from_c() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("abi-key");
    let dir = tmp.path();
    let key = dir.join("k");
    std::fs::write(&key, [0x5Au8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_udp_port();
    let uri = format!("udp://127.0.0.1:{port}?key={}\0", key.display());

    unsafe extern "C" fn count(user: *mut std::ffi::c_void, _: u32, _: *const u8, len: usize) {
        // SAFETY: `user` is the `usize` counter passed to the poll below.
        unsafe { *user.cast::<usize>() += len };
    }
    // SAFETY: NUL-terminated URI; the handles are closed below; `got`
    // outlives every poll that writes it.
    unsafe {
        let s = conduit_subscription_open(uri.as_ptr().cast());
        assert!(!s.is_null(), "{}", last_error());
        let p = conduit_publication_open(uri.as_ptr().cast());
        assert!(!p.is_null(), "{}", last_error());
        let mut got = 0usize;
        let mut sent = false;
        // Bounded: a stream that never connects fails here, it does not hang.
        for _ in 0..20_000 {
            if !sent {
                sent = conduit_publication_offer(p, 3, b"keyed".as_ptr().cast(), 5) >= 0;
            }
            let n = conduit_subscription_poll(s, Some(count), (&raw mut got).cast(), 16);
            assert!(n >= 0, "{}", last_error());
            if got > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        assert_eq!(got, 5, "{}", last_error());
        conduit_publication_close(p);
        conduit_subscription_close(s);
    }

    // A key file others can read is refused, with the reason in the error.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: NUL-terminated URI.
    let p = unsafe { conduit_publication_open(uri.as_ptr().cast()) };
    assert!(p.is_null());
    let e = last_error();
    assert!(
        e.starts_with("conduit_publication_open: invalid channel URI")
            && e.contains("readable or writable by group or others"),
        "{e}"
    );
    assert_eq!(
        text(conduit_status_string(CONDUIT_KEY_MISMATCH)),
        "CONDUIT_KEY_MISMATCH"
    );
}

/// Through the C ABI: a second publication to a live udp subscription gets
/// `CONDUIT_SESSION_REFUSED` from offer and flush (never 0); a publication
/// with a larger `mtu` gets `CONDUIT_MTU_MISMATCH`, and so does the
/// subscription's poll.
#[test]
fn udp_refusal_and_mtu_mismatch_are_c_statuses() {
    unsafe extern "C" fn ignore(_: *mut std::ffi::c_void, _: u32, _: *const u8, _: usize) {}
    let [p1, p2] = free_udp_ports();
    // One session at a time: a second publication is refused.
    let uri = format!("udp://127.0.0.1:{p1}?max_sessions=1\0");
    let sub_uri = format!("udp://127.0.0.1:{p2}?mtu=1408\0");
    let big_uri = format!("udp://127.0.0.1:{p2}?mtu=9000\0");
    // SAFETY: NUL-terminated URIs; the handles are closed below.
    unsafe {
        let s = conduit_subscription_open(uri.as_ptr().cast());
        assert!(!s.is_null(), "{}", last_error());
        let first = conduit_publication_open(uri.as_ptr().cast());
        let second = conduit_publication_open(uri.as_ptr().cast());
        assert!(!first.is_null() && !second.is_null(), "{}", last_error());
        let mut refused = false;
        // Bounded: a refusal that is never reported fails here.
        for _ in 0..20_000 {
            let _ = conduit_publication_offer(first, 1, b"a".as_ptr().cast(), 1);
            let r = conduit_publication_offer(second, 2, b"b".as_ptr().cast(), 1);
            assert!(r < 0, "the second publication's offer was accepted");
            let n = conduit_subscription_poll(s, Some(ignore), std::ptr::null_mut(), 16);
            assert!(n >= 0, "{}", last_error());
            if r == i64::from(CONDUIT_SESSION_REFUSED) {
                refused = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert!(refused, "{}", last_error());
        assert_eq!(
            conduit_publication_flush(second, 10),
            CONDUIT_SESSION_REFUSED
        );
        conduit_publication_close(second);
        conduit_publication_close(first);
        conduit_subscription_close(s);

        let s = conduit_subscription_open(sub_uri.as_ptr().cast());
        let p = conduit_publication_open(big_uri.as_ptr().cast());
        assert!(!s.is_null() && !p.is_null(), "{}", last_error());
        let (mut pub_code, mut sub_code) = (0i64, 0);
        for _ in 0..20_000 {
            let r = conduit_publication_offer(p, 1, b"x".as_ptr().cast(), 1);
            if r < 0 && r != i64::from(CONDUIT_NOT_CONNECTED) {
                pub_code = r;
            }
            let n = conduit_subscription_poll(s, Some(ignore), std::ptr::null_mut(), 16);
            if n < 0 {
                sub_code = n;
            }
            if pub_code != 0 && sub_code != 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert_eq!(
            (pub_code, sub_code),
            (i64::from(CONDUIT_MTU_MISMATCH), CONDUIT_MTU_MISMATCH)
        );
        conduit_publication_close(p);
        conduit_subscription_close(s);
    }
}

#[test]
fn poll_ex_names_each_publisher_of_a_shared_channel() {
    let dir = std::env::temp_dir().join(format!("conduit-abi-poll-ex-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uri = format!("shm:pollex?publishers=2&dir={}\0", dir.display());
    extern "C" fn keep(
        user: *mut std::ffi::c_void,
        h: *const conduit_header,
        _: *const u8,
        len: usize,
    ) {
        // SAFETY: `user` is the Vec passed below; `h` is valid for the call.
        unsafe { (*user.cast::<Vec<(conduit_header, usize)>>()).push((*h, len)) };
    }
    // SAFETY: NUL-terminated URI; the handles are closed below; `got`
    // outlives the polls.
    unsafe {
        let s = conduit_subscription_open(uri.as_ptr().cast());
        let a = conduit_publication_open(uri.as_ptr().cast());
        let b = conduit_publication_open(uri.as_ptr().cast());
        assert!(
            !s.is_null() && !a.is_null() && !b.is_null(),
            "{}",
            last_error()
        );
        assert!(conduit_publication_open(uri.as_ptr().cast()).is_null());
        assert!(last_error().contains("publisher slots"), "{}", last_error());
        let mut got: Vec<(conduit_header, usize)> = Vec::new();
        let user = (&mut got as *mut Vec<(conduit_header, usize)>).cast();
        for (p, type_id) in [(a, 1), (b, 2)] {
            let mut sent = false;
            for _ in 0..10_000 {
                if conduit_publication_offer(p, type_id, b"abc".as_ptr().cast(), 3) >= 0 {
                    sent = true;
                    break;
                }
                conduit_subscription_poll_ex(s, Some(keep), user, 1);
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            assert!(sent, "{}", last_error());
        }
        for _ in 0..10_000 {
            if got.len() >= 2 {
                break;
            }
            assert!(conduit_subscription_poll_ex(s, Some(keep), user, 8) >= 0);
        }
        assert_eq!(
            conduit_subscription_poll_ex(s, None, user, 1),
            CONDUIT_INVALID_ARGUMENT
        );
        assert_eq!(got.len(), 2);
        for (k, (h, len)) in got.iter().enumerate() {
            assert_eq!(h.size as usize, size_of::<conduit_header>());
            assert_eq!((h.type_id, *len), (k as u32 + 1, 3));
            assert_eq!(h.source_kind, CONDUIT_SOURCE_SHM);
            assert_eq!(h.source_index, k as u32);
            assert_eq!(h.source_pid, std::process::id());
        }
        assert!(got[1].0.position > got[0].0.position);
        conduit_publication_close(b);
        conduit_publication_close(a);
        conduit_subscription_close(s);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn udp_sources_and_session_events_reach_c() {
    let [sub_port, pub_port] = free_udp_ports::<2>();
    let sub_uri = format!("udp://127.0.0.1:{sub_port}?driver=socket\0");
    let pub_uri = format!("udp://127.0.0.1:{sub_port}?driver=socket&bind=127.0.0.1:{pub_port}\0");
    extern "C" fn keep(
        user: *mut std::ffi::c_void,
        h: *const conduit_header,
        _: *const u8,
        _: usize,
    ) {
        // SAFETY: `user` is the Vec passed below; `h` is valid for the call.
        unsafe { (*user.cast::<Vec<conduit_header>>()).push(*h) };
    }
    // SAFETY: NUL-terminated URIs; the handles are closed below; `got`
    // outlives the polls; `ev` is a writable, sized event.
    unsafe {
        let s = conduit_subscription_open(sub_uri.as_ptr().cast());
        let p = conduit_publication_open(pub_uri.as_ptr().cast());
        assert!(!s.is_null() && !p.is_null(), "{}", last_error());
        let mut got: Vec<conduit_header> = Vec::new();
        let user = (&mut got as *mut Vec<conduit_header>).cast();
        let mut sent = 0;
        for _ in 0..100_000 {
            if got.len() >= 2 {
                break;
            }
            if sent < 2 && conduit_publication_offer(p, 5, b"abcd".as_ptr().cast(), 4) >= 0 {
                sent += 1;
            }
            assert!(conduit_subscription_poll_ex(s, Some(keep), user, 8) >= 0);
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        assert_eq!(got.len(), 2, "{}", last_error());
        let h = got[0];
        assert_eq!(h.size as usize, size_of::<conduit_header>());
        assert_eq!(h.source_kind, CONDUIT_SOURCE_UDP);
        assert_eq!((h.source_family, h.source_port), (4, pub_port));
        assert_eq!(&h.source_addr[..4], &[127, 0, 0, 1]);
        assert_ne!(h.source_session, 0);
        assert_eq!(got[1].source_session, h.source_session);
        assert!(got[1].position > h.position);

        let mut ev = conduit_session_event {
            size: size_of::<conduit_session_event>() as u32,
            ..conduit_session_event::default()
        };
        assert_eq!(conduit_subscription_next_session_event(s, &mut ev), 1);
        assert_eq!(ev.kind, CONDUIT_SESSION_EVENT_JOINED);
        assert_eq!(ev.session, h.source_session);
        assert_eq!((ev.family, ev.port), (4, pub_port));
        assert_eq!(ev.size as usize, size_of::<conduit_session_event>());
        assert_eq!(conduit_subscription_next_session_event(s, &mut ev), 0);
        // Size-first: too small a struct is refused, NULLs too.
        let mut small = conduit_session_event {
            size: 8,
            ..conduit_session_event::default()
        };
        assert_eq!(
            conduit_subscription_next_session_event(s, &mut small),
            CONDUIT_INVALID_ARGUMENT
        );
        assert_eq!(
            conduit_subscription_next_session_event(s, std::ptr::null_mut()),
            CONDUIT_INVALID_ARGUMENT
        );
        assert_eq!(
            conduit_subscription_next_session_event(std::ptr::null_mut(), &mut ev),
            CONDUIT_INVALID_ARGUMENT
        );
        // The publication closes: the session is reported gone (closed).
        conduit_publication_close(p);
        let mut gone = false;
        for _ in 0..100_000 {
            let _ = conduit_subscription_poll_ex(s, Some(keep), user, 8);
            if conduit_subscription_next_session_event(s, &mut ev) == 1 {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        assert!(gone, "no session event after the close");
        assert_eq!(
            (ev.kind, ev.reason, ev.session),
            (
                CONDUIT_SESSION_EVENT_GONE,
                CONDUIT_GONE_CLOSED,
                h.source_session
            )
        );
        conduit_subscription_close(s);
    }
}

#[test]
fn receiver_events_are_size_first_and_none_for_one_host() {
    let pub_uri = "udp://127.0.0.1:9?driver=socket\0";
    // SAFETY: a NUL-terminated URI; the handle is closed below; the events
    // are writable and sized.
    unsafe {
        let p = conduit_publication_open(pub_uri.as_ptr().cast());
        assert!(!p.is_null(), "{}", last_error());
        let mut ev = conduit_receiver_event {
            size: size_of::<conduit_receiver_event>() as u32,
            ..conduit_receiver_event::default()
        };
        assert_eq!(conduit_publication_next_receiver_event(p, &mut ev), 0);
        let mut small = conduit_receiver_event {
            size: 15,
            ..conduit_receiver_event::default()
        };
        assert_eq!(
            conduit_publication_next_receiver_event(p, &mut small),
            CONDUIT_INVALID_ARGUMENT
        );
        assert!(last_error().contains("CONDUIT_RECEIVER_EVENT_INIT"));
        assert_eq!(
            conduit_publication_next_receiver_event(p, std::ptr::null_mut()),
            CONDUIT_INVALID_ARGUMENT
        );
        assert_eq!(
            conduit_publication_next_receiver_event(std::ptr::null_mut(), &mut ev),
            CONDUIT_INVALID_ARGUMENT
        );
        conduit_publication_close(p);
    }
}
