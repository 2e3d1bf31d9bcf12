//! Builds the C examples and the C test program against libconduit with
//! `cc -std=c11 -Wall -Wextra -Wpedantic -Werror` and runs them: the test
//! program (also under AddressSanitizer + UBSan), and a C ping-pong.
//!
//! Every child process runs under a watchdog that kills it and fails the test
//! with its output when it hangs. Nothing here asserts a run time.

#[path = "../../tests/tests/c_support/shared.rs"]
mod shared;

use shared::{expect_success, in_ci, run, run_ping_pong, Link};
use std::path::{Path, PathBuf};
use std::process::Command;

fn ffi_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding this build's libconduit.{a,so}: the test binary's
/// own `deps/` directory (cargo builds the library's every crate type there).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test binary has a directory")
        .to_path_buf();
    for name in ["libconduit.a", "libconduit.so"] {
        assert!(
            deps.join(name).exists(),
            "{name} not found in {} (cargo builds it with the conduit-ffi tests)",
            deps.display()
        );
    }
    deps
}

/// A fresh scratch directory under the target dir.
fn scratch(name: &str) -> PathBuf {
    shared::scratch_dir("conduit-c", name)
}

/// Compiles `source` (relative to ffi/) into `out_dir`; returns the
/// executable, or the compiler's output on failure.
fn compile(source: &str, out_dir: &Path, link: Link, extra: &[&str]) -> Result<PathBuf, String> {
    let lib = lib_dir();
    shared::compile_c(ffi_dir(), &lib, source, out_dir, link, extra)
}

#[test]
fn examples_and_test_program_compile_strictly() {
    let dir = scratch("compile");
    for source in [
        "examples/ping.c",
        "examples/pong.c",
        "tests/c/test_conduit.c",
        "tests/c/interop.c",
    ] {
        for link in [Link::Static, Link::Shared] {
            compile(source, &dir, link, &[]).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // The header also compiles as C++ (extern "C" guards).
    let cpp = dir.join("header.cpp");
    std::fs::write(&cpp, "#include \"conduit.h\"\nint main() { conduit_claim c = CONDUIT_CLAIM_INIT; return c.len == 0 ? 0 : 1; }\n").unwrap();
    if Command::new("c++")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let mut cmd = Command::new("c++");
        cmd.args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
            .arg(ffi_dir().join("include"))
            .arg(&cpp);
        expect_success(&run(cmd, "c++"), "compiling conduit.h as C++");
    }
}

fn run_test_program(exe: &Path, env: &[(&str, &str)]) -> String {
    let rings = scratch("rings");
    let mut cmd = Command::new(exe);
    cmd.arg(&rings).envs(env.iter().copied());
    let out = run(cmd, "test_conduit");
    let stdout = expect_success(&out, "test_conduit");
    assert!(
        stdout.contains(" passed, 0 failed"),
        "unexpected summary: {stdout}"
    );
    stdout
}

#[test]
fn c_test_program_passes() {
    let dir = scratch("test-static");
    let exe = compile("tests/c/test_conduit.c", &dir, Link::Static, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", run_test_program(&exe, &[]));
    let dir = scratch("test-shared");
    let exe = compile("tests/c/test_conduit.c", &dir, Link::Shared, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", run_test_program(&exe, &[]));
}

#[test]
fn c_test_program_passes_under_address_and_undefined_sanitizers() {
    let dir = scratch("asan");
    let flags = [
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
        "-g",
    ];
    let exe = match compile("tests/c/test_conduit.c", &dir, Link::Shared, &flags) {
        Ok(exe) => exe,
        Err(e) if in_ci() => {
            panic!("the sanitizer build must work in CI (is libasan/libubsan installed?): {e}")
        }
        Err(e) => {
            println!("SKIPPED: cannot build with -fsanitize=address,undefined here (CI=true makes this a failure): {e}");
            return;
        }
    };
    // Leak checking is off: the Rust runtime keeps a few allocations for the
    // life of the process (thread-local error slots, std's buffers).
    let stdout = run_test_program(
        &exe,
        &[
            ("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1"),
            ("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        ],
    );
    println!("{stdout}");
}

fn ping_pong(pong_args: &[&str]) {
    let dir = scratch("pingpong");
    let ping =
        compile("examples/ping.c", &dir, Link::Shared, &[]).unwrap_or_else(|e| panic!("{e}"));
    let pong =
        compile("examples/pong.c", &dir, Link::Static, &[]).unwrap_or_else(|e| panic!("{e}"));
    let rings = scratch("pingpong-rings");
    let ping_uri = format!("shm:ping?dir={}&capacity=64k", rings.display());
    let pong_uri = format!("shm:pong?dir={}&capacity=64k", rings.display());
    let mut pong_cmd = Command::new(&pong);
    pong_cmd.args([&ping_uri, &pong_uri]).args(pong_args);
    let mut ping_cmd = Command::new(&ping);
    ping_cmd.args([&ping_uri, &pong_uri, "20000", "1000", "32"]);
    run_ping_pong(("ping", ping_cmd), ("pong", pong_cmd), 20000);
}

/// One test for both variants: each runs two busy-polling processes, and
/// two pairs at once on a small machine would only slow each other down.
#[test]
fn c_ping_pong_over_shm() {
    ping_pong(&[]);
    ping_pong(&["claim"]);
}
