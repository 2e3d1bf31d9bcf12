//! The C ABI from Python: `ffi/examples/python/conduit_example.py` loads
//! libconduit.so with ctypes, publishes and receives over `shm:`, and checks
//! every message and a bad call.

mod c_support;

use c_support::{expect_success, ffi_dir, in_ci, lib_dir, run, scratch};
use std::process::Command;

#[test]
fn python_ctypes_example_publishes_and_receives_over_shm() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    if !Command::new(&python)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(!in_ci(), "{python} is required in CI");
        println!("SKIPPED: {python} not found (CI=true makes this a failure)");
        return;
    }
    let dir = scratch("python");
    let mut cmd = Command::new(&python);
    cmd.arg(ffi_dir().join("examples/python/conduit_example.py"))
        .arg("--lib")
        .arg(lib_dir().join("libconduit.so"))
        .arg("--dir")
        .arg(&dir)
        .args(["--count", "5000"]);
    let stdout = expect_success(&run(cmd, "python example"), "python example");
    println!("{stdout}");
    assert!(
        stdout.contains("bad URI refused: conduit_publication_open: invalid channel URI"),
        "{stdout}"
    );
    assert!(
        stdout.contains("NULL publication refused: CONDUIT_INVALID_ARGUMENT"),
        "{stdout}"
    );
    assert!(
        stdout.contains("python: sent 5000, received 5000, all checked"),
        "{stdout}"
    );
}
