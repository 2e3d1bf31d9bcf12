//! Two private network namespaces joined by one veth pair, for the channels
//! that cross it (`udp-veth`, `udp-multicast-veth`, `udp-raw-veth`,
//! `udp-raw-multicast-veth`): as between two hosts, neither sender's
//! namespace has a member of the group it sends to, so the kernel does not
//! loop a copy of each multicast datagram back to the sender's own host,
//! which on `lo` ([`super::netns`]) costs a route per send.
//!
//! [`run`] calls a function on a new thread that makes namespace A
//! (`unshare(CLONE_NEWNET)`, which moves only the calling thread), then
//! namespace B the same way, creates the pair from B (`veth-b` in B,
//! `veth-a` moved to A), gives `veth-a` [`PING_ADDR`] and `veth-b`
//! [`PONG_ADDR`] (`/30`), brings both and `lo` up with multicast on, routes
//! `224.0.0.0/4` to the veth in each, and moves back to A: the function
//! runs in A (ping's sockets), and [`spawn_peer`] starts the pong process in
//! B (the thread steps into B for the `fork` and back). All of it is done
//! with iproute2's `ip`, run in the thread's namespace.
//!
//! The namespaces have no names (nothing under `/run/netns`): each lives as
//! long as something holds it (the thread's descriptors, a socket, the pong
//! process), and the veth pair goes with them. Nothing is left behind when
//! the bench stops, on error, on panic or on SIGINT alike.
//!
//! The veth keeps its defaults: no GRO (a veth without XDP has no NAPI, so
//! each datagram goes up the peer's stack from the sender's `netif_rx`
//! backlog on the same CPU), GSO and checksum offload on (a datagram
//! larger than the MTU is never sent by the round trips, so segmentation
//! does not come into it); MTU 1500.

use std::cell::RefCell;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

use super::netns;
use crate::error::{BenchError, Result};

/// The address of `veth-a`, ping's side (namespace A).
pub const PING_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The address of `veth-b`, pong's side (namespace B).
pub const PONG_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

/// What [`run`] makes, for its error messages.
const WHAT: &str = "two network namespaces joined by a veth pair";

/// Why the namespaces could not be made: the message a skipped channel
/// prints.
fn unavailable(why: String) -> BenchError {
    netns::unavailable(WHAT, why)
}

/// Runs `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) -> Result<()> {
    netns::ip(WHAT, args)
}

/// Moves the calling thread into a new network namespace and returns a
/// descriptor of it.
fn unshare() -> Result<File> {
    netns::unshare(WHAT)?;
    File::open("/proc/thread-self/ns/net")
        .map_err(|e| unavailable(format!("/proc/thread-self/ns/net: {e}")))
}

/// Moves the calling thread into the network namespace `ns`.
fn setns(ns: RawFd) -> Result<()> {
    // SAFETY: setns takes a descriptor (of a namespace we opened and still
    // hold) and a flag word, no pointers; it moves only the calling thread.
    let rc = unsafe { libc::setns(ns, libc::CLONE_NEWNET) };
    super::os_result(rc).map_err(|e| unavailable(format!("setns(CLONE_NEWNET): {e}")))
}

/// The two namespaces, held open by the thread of [`run`].
struct Namespaces {
    /// A: ping's, where the thread runs.
    own: File,
    /// B: where [`spawn_peer`] starts the pong process.
    peer: File,
}

thread_local! {
    /// The namespaces of the calling thread's [`run`], if it is in one.
    static CURRENT: RefCell<Option<Namespaces>> = const { RefCell::new(None) };
}

/// Configures the calling thread's namespace's side: `dev` gets `addr`/30,
/// it and `lo` go up with multicast on, and the groups route to it.
fn configure(dev: &str, addr: Ipv4Addr) -> Result<()> {
    ip(&["link", "set", "lo", "up"])?;
    ip(&["addr", "add", &format!("{addr}/30"), "dev", dev])?;
    ip(&["link", "set", dev, "up", "multicast", "on"])?;
    ip(&["route", "add", "224.0.0.0/4", "dev", dev])
}

/// Makes A and B with the pair between them (see the module docs); leaves
/// the calling thread in A.
fn enter() -> Result<Namespaces> {
    let own = unshare()?;
    let peer = unshare()?;
    // In B: create the pair, `veth-a` straight into A (through our
    // descriptor of A, which `ip` opens by its /proc path).
    let a_path = format!("/proc/{}/fd/{}", std::process::id(), own.as_raw_fd());
    ip(&[
        "link", "add", "veth-b", "type", "veth", "peer", "name", "veth-a", "netns", &a_path,
    ])?;
    configure("veth-b", PONG_ADDR)?;
    setns(own.as_raw_fd())?;
    configure("veth-a", PING_ADDR)?;
    Ok(Namespaces { own, peer })
}

/// Runs `f` on a thread of its own in namespace A, with B across a veth
/// pair (see the module docs); [`spawn_peer`] called in `f` starts
/// processes in B.
///
/// # Errors
/// The namespaces cannot be made, or `f` failed.
pub fn run<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("veth".into())
            .spawn_scoped(s, || {
                let ns = enter()?;
                CURRENT.with(|c| *c.borrow_mut() = Some(ns));
                let r = f();
                CURRENT.with(|c| c.borrow_mut().take());
                r
            })
            .map_err(|e| BenchError(format!("cannot start the veth thread: {e}")))?
            .join()
            .map_err(|_| BenchError::msg("the veth thread panicked"))?
    })
}

/// Calls `spawn` (which starts a process) in namespace B when the calling
/// thread is in [`run`], so the process and everything it opens is in B;
/// elsewhere calls it as it is.
///
/// # Errors
/// `spawn` failed, or the thread could not move between the namespaces.
pub fn spawn_peer<T>(spawn: impl FnOnce() -> Result<T>) -> Result<T> {
    let fds = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map(|n| (n.own.as_raw_fd(), n.peer.as_raw_fd()))
    });
    let Some((own, peer)) = fds else {
        return spawn();
    };
    setns(peer)?;
    let r = spawn();
    setns(own)?;
    r
}

/// Checks the namespaces and the pair can be made here.
///
/// # Errors
/// They cannot; the message says why.
pub fn probe() -> Result<()> {
    run(|| Ok(()))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Needs root and `ip`; where they are missing, checks that the error
    /// says so.
    #[test]
    fn a_process_spawned_in_run_is_in_the_other_namespace() {
        let r = run(|| {
            let own = std::fs::read_link("/proc/thread-self/ns/net")?;
            let child = spawn_peer(|| {
                Command::new("readlink")
                    .arg("/proc/self/ns/net")
                    .output()
                    .map_err(BenchError::from)
            })?;
            let peer = String::from_utf8_lossy(&child.stdout).trim().to_string();
            // The pong side's address is in B, not in A.
            let here = std::net::UdpSocket::bind((PONG_ADDR, 0));
            Ok((own.display().to_string(), peer, here.is_err()))
        });
        match r {
            Ok((own, peer, pong_addr_absent)) => {
                assert!(own.starts_with("net:[") && peer.starts_with("net:["));
                assert_ne!(own, peer);
                assert!(pong_addr_absent);
                let host = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
                assert_ne!(host.display().to_string(), own);
            }
            Err(e) => assert!(e.to_string().contains("needs root"), "{e}"),
        }
    }
}
