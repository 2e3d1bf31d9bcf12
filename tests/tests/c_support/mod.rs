//! Shared by the C and Python interop tests: finding (or building)
//! libconduit, compiling C against it, running children under a watchdog.
//! Compiling and running children live in `shared.rs`, which
//! `ffi/tests/c_programs.rs` includes too.

#![allow(dead_code)]

mod shared;

// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use shared::{expect_success, in_ci, run, run_ping_pong, spawn, wait, Link};

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's `ffi/` directory.
pub fn ffi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffi")
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    shared::scratch_dir("conduit-interop", name)
}

/// The directory holding libconduit.{a,so} of this build: the test binary's
/// `deps/` directory. When the workspace's tests are built together, cargo
/// has built conduit-ffi there already; when this crate's tests run alone,
/// the library is built here first (same profile, same target dir).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test binary has a directory")
        .to_path_buf();
    let present = |d: &Path| d.join("libconduit.a").exists() && d.join("libconduit.so").exists();
    if !present(&deps) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        println!("libconduit not in {}: building conduit-ffi", deps.display());
        let status = Command::new(cargo)
            .args(["build", "--profile", "test", "-p", "conduit-ffi"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p conduit-ffi");
        assert!(status.success(), "cargo build -p conduit-ffi failed");
    }
    assert!(
        present(&deps),
        "libconduit.{{a,so}} not found in {}",
        deps.display()
    );
    deps
}

/// Compiles `source` (relative to `ffi/`) with `-std=c11 -Wall -Wextra
/// -Wpedantic -Werror` into `out_dir`.
pub fn compile(source: &str, out_dir: &Path, link: Link) -> PathBuf {
    let lib = lib_dir();
    shared::compile_c(&ffi_dir(), &lib, source, out_dir, link, &[])
        .unwrap_or_else(|e| panic!("{e}"))
}
