//! Building C programs against libconduit and running children under a
//! watchdog. One file for two crates: `tests/tests/c_support/mod.rs` (the C
//! and Python interop tests) declares it as a module, and
//! `ffi/tests/c_programs.rs` includes it with `#[path]` (integration tests of
//! different crates cannot share code otherwise). Each includer supplies
//! where `ffi/` and the library are.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Longest any child may run before it is killed and the test fails.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// True when running in CI, where missing tools are failures, not skips.
pub use conduit_test_util::in_ci;

/// A fresh scratch directory `{prefix}-{pid}-{n}-{name}` under the including
/// crate's target tmp dir.
pub fn scratch_dir(prefix: &str, name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{prefix}-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// How a C program links libconduit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Link {
    /// `libconduit.a` (+ `-lpthread -ldl -lm`).
    Static,
    /// `-lconduit` with an rpath to the library's directory.
    Shared,
}

const STRICT: &[&str] = &[
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
    "-O2",
];

/// Compiles `source` (relative to `ffi`) with `-std=c11 -Wall -Wextra
/// -Wpedantic -Werror -O2` and then `extra` into `out_dir`, linking the
/// libconduit in `lib`; returns the executable, or the compiler's output on
/// failure.
pub fn compile_c(
    ffi: &Path,
    lib: &Path,
    source: &str,
    out_dir: &Path,
    link: Link,
    extra: &[&str],
) -> Result<PathBuf, String> {
    let stem = Path::new(source)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let exe = out_dir.join(stem);
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(STRICT)
        .args(extra)
        .arg("-I")
        .arg(ffi.join("include"))
        .arg(ffi.join(source))
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libconduit.a"));
        }
        Link::Shared => {
            // DT_RPATH (not RUNPATH): wins over the LD_LIBRARY_PATH cargo sets,
            // which may list another build's libconduit.so first.
            cmd.arg("-L")
                .arg(lib)
                .arg("-lconduit")
                .arg(format!("-Wl,-rpath,{},--disable-new-dtags", lib.display()));
        }
    }
    cmd.args(["-lpthread", "-ldl", "-lm"]);
    let out = run(cmd, "cc");
    if out.status.success() {
        Ok(exe)
    } else {
        Err(format!(
            "compiling {source} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts `cmd` with piped output.
pub fn spawn(mut cmd: Command, what: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Waits for `child` under the watchdog; kills it and panics on a hang.
pub fn wait(child: Child, what: &str) -> Output {
    conduit_test_util::wait_output(child, what, WATCHDOG)
}

/// Runs `cmd` to completion under the watchdog.
pub fn run(cmd: Command, what: &str) -> Output {
    wait(spawn(cmd, what), what)
}

/// Runs a ping-pong pair (`ping.c` and a pong): `pong` in the background,
/// then `ping`, each under the watchdog and named by its `&str`. Both must
/// succeed and ping must report `round_trips` round trips and its latency
/// percentiles. Prints pong's stderr and ping's stdout; returns the latter.
pub fn run_ping_pong(ping: (&str, Command), pong: (&str, Command), round_trips: u32) -> String {
    let pong_child = spawn(pong.1, pong.0);
    let ping_out = run(ping.1, ping.0);
    let pong_out = wait(pong_child, pong.0);
    println!(
        "{} stderr:\n{}",
        pong.0,
        String::from_utf8_lossy(&pong_out.stderr)
    );
    let stdout = expect_success(&ping_out, ping.0);
    expect_success(&pong_out, pong.0);
    assert!(
        stdout.contains(&format!("{round_trips} round trips")),
        "{stdout}"
    );
    assert!(stdout.contains("rtt_ns p50="), "{stdout}");
    println!("{stdout}");
    stdout
}

/// Panics with the child's output unless it succeeded; returns its stdout.
pub fn expect_success(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
