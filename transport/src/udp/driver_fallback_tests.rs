//! The io_uring fallback under a seccomp filter that refuses
//! `io_uring_setup` (as Docker's default profile does), in this test's
//! thread only.

use std::net::SocketAddr;

use super::driver::{open_driver, Driver, DriverChoice, DriverConfig, DriverKind};

/// `io_uring_setup`'s number (the same on every architecture since 5.1).
const SYS_IO_URING_SETUP: u32 = 425;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Makes `io_uring_setup` fail with `errno` in the calling thread.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn refuse_io_uring(errno: i32) {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let prog = [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, AUDIT_ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, SYS_IO_URING_SETUP),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | errno as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `fprog` points at `prog`, which outlives
    // the call; the filter only affects this thread (no TSYNC flag).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn check(errno: i32) {
    // Each test runs in its own thread: the filter dies with it.
    std::thread::spawn(move || {
        refuse_io_uring(errno);
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cfg = DriverConfig {
            choice: DriverChoice::PreferUring,
            ..DriverConfig::default()
        };
        let d = open_driver(bind, &cfg).expect("fallback to the socket driver");
        assert_eq!(d.kind(), DriverKind::Socket);
        let forced = DriverConfig {
            choice: DriverChoice::Uring,
            ..DriverConfig::default()
        };
        let e = open_driver(bind, &forced).expect_err("forced io_uring must fail");
        assert_eq!(e.raw_os_error(), Some(errno));
    })
    .join()
    .unwrap();
}

#[test]
fn falls_back_on_eperm() {
    check(libc::EPERM);
}

#[test]
fn falls_back_on_enosys() {
    check(libc::ENOSYS);
}
