//! A private network namespace for the channels that need one
//! (`udp-multicast`, `udp-netns`): multicast on loopback needs `lo`'s
//! MULTICAST flag and a route for the groups, which the bench must not set
//! on the host.
//!
//! [`run`] calls a function on a new thread that first moves itself alone
//! into a new network namespace (`unshare(CLONE_NEWNET)` changes only the
//! calling thread's namespace), brings its `lo` up with multicast on and
//! routes `224.0.0.0/4` to it (with `ip`, from iproute2, which runs in the
//! thread's namespace). Every socket the function opens, every thread it
//! starts and every process it spawns (the pong peer) is in that namespace;
//! it goes away with the last of them. The host's namespace and the other
//! threads of the bench are not touched.

use std::process::Command;

use crate::error::{BenchError, Result};

/// What [`run`] makes, for its error messages.
const WHAT: &str = "a private network namespace";

/// Why `what` (the namespaces a module makes) could not be made (not root,
/// no `unshare`, no `ip`): the message a skipped channel prints.
pub(super) fn unavailable(what: &str, why: String) -> BenchError {
    BenchError(format!(
        "cannot make {what}: {why} (needs root and iproute2's `ip`)"
    ))
}

/// Runs `ip ARGS` in the calling thread's namespace; a failure is
/// [`unavailable`] for `what`.
pub(super) fn ip(what: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| unavailable(what, format!("ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(unavailable(
            what,
            format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// Moves the calling thread into a new network namespace; a failure is
/// [`unavailable`] for `what`. Called only on the thread of a `run` (this
/// module's or [`super::veth`]'s), which ends when `run` returns.
pub(super) fn unshare(what: &str) -> Result<()> {
    // SAFETY: unshare takes a flag word and no pointers; CLONE_NEWNET moves
    // only the calling thread, which is a thread of our own (the callers'
    // `run`) that ends when `run` returns.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    super::os_result(rc).map_err(|e| unavailable(what, format!("unshare(CLONE_NEWNET): {e}")))
}

/// Moves the calling thread into a new network namespace and sets up its
/// `lo` for multicast.
fn enter() -> Result<()> {
    unshare(WHAT)?;
    ip(WHAT, &["link", "set", "lo", "up", "multicast", "on"])?;
    ip(WHAT, &["route", "add", "224.0.0.0/4", "dev", "lo"])
}

/// Runs `f` on a thread of its own in a new network namespace whose `lo`
/// is up and carries multicast (see the module docs).
///
/// # Errors
/// The namespace cannot be made, or `f` failed.
pub fn run<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, || {
                enter()?;
                f()
            })
            .map_err(|e| BenchError(format!("cannot start the namespace's thread: {e}")))?
            .join()
            .map_err(|_| BenchError::msg("the namespace's thread panicked"))?
    })
}

/// Checks a namespace can be made here.
///
/// # Errors
/// It cannot; the message says why.
pub fn probe() -> Result<()> {
    run(|| Ok(()))
}
