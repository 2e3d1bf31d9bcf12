//! The peer process: the parent re-executes this binary with a hidden
//! subcommand (`__pong` for latency, `__send` for throughput) and talks to it
//! over the child's stdout, one tagged line per event.
//!
//! The child is never orphaned: it asks the kernel for SIGKILL when its parent
//! dies, and the parent's handle kills it on drop (error, panic, early return).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::error::{BenchError, Result};

/// Every line the child sends to the parent starts with this tag; other output
/// on the child's stdout (a library's log line, say) is ignored.
const PREFIX: &str = "@conduit-bench ";

/// How long the parent waits for the child to get ready (map memory, bind
/// sockets, open services) before giving up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The parent's handle on a peer process. Dropping it kills the process.
pub struct Peer {
    child: Option<Child>,
    lines: Receiver<String>,
    what: String,
    gone: Arc<AtomicBool>,
}

/// Lets a spinning loop notice that the peer process is gone (its stdout
/// closed) instead of waiting for its idle timeout.
#[derive(Clone, Default)]
pub struct PeerWatch(Option<Arc<AtomicBool>>);

impl PeerWatch {
    /// A watch that never fires (the peer is a thread of this process).
    pub fn none() -> Self {
        PeerWatch(None)
    }

    /// True once the peer process has exited or closed its stdout.
    pub fn gone(&self) -> bool {
        // Relaxed: a hint for error reporting only; no data depends on it.
        self.0.as_ref().is_some_and(|g| g.load(Ordering::Relaxed))
    }
}

impl Peer {
    /// Starts this executable again as `exe role args...`.
    ///
    /// # Errors
    /// The executable cannot be found or started.
    pub fn spawn(role: &str, args: &[String]) -> Result<Peer> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError(format!("cannot find own executable: {e}")))?;
        let mut child = Command::new(&exe)
            .arg(role)
            .args(args)
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError(format!("cannot start {} {role}: {e}", exe.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::msg("child stdout was not captured"))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let gone = Arc::new(AtomicBool::new(false));
        let gone_w = Arc::clone(&gone);
        std::thread::Builder::new()
            .name("peer-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(tagged) = line.strip_prefix(PREFIX) {
                        if tx.send(tagged.to_string()).is_err() {
                            break;
                        }
                    }
                }
                // Relaxed: see `PeerWatch::gone`.
                gone_w.store(true, Ordering::Relaxed);
            })
            .map_err(|e| BenchError(format!("cannot start reader thread: {e}")))?;
        Ok(Peer {
            child: Some(child),
            lines: rx,
            what: format!("{role} {}", args.join(" ")),
            gone,
        })
    }

    /// The child's pid, while it has not been reaped.
    #[cfg_attr(not(feature = "conduit"), allow(dead_code))]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A watch that fires when this peer exits.
    pub fn watch(&self) -> PeerWatch {
        PeerWatch(Some(Arc::clone(&self.gone)))
    }

    /// The error to report when the peer vanished mid-run: its own `ERROR`
    /// line if it sent one, else its exit status.
    pub fn failure(&mut self) -> BenchError {
        while let Ok(line) = self.lines.try_recv() {
            if let Some(msg) = line.strip_prefix("ERROR ") {
                return BenchError(format!("peer process failed: {msg}"));
            }
        }
        let status = self.wait_exit(Duration::from_secs(5));
        BenchError(format!(
            "peer process `{}` exited mid-run ({})",
            self.what,
            describe(status)
        ))
    }

    /// Waits up to `timeout` for the line tagged `tag` and returns the rest of
    /// it. A line tagged `ERROR` becomes this call's error.
    ///
    /// # Errors
    /// The child reported an error, exited, or stayed silent for `timeout`.
    pub fn expect(&mut self, tag: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let (t, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    if t == tag {
                        return Ok(rest.to_string());
                    }
                    if t == "ERROR" {
                        return Err(BenchError(format!("peer process failed: {rest}")));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(BenchError(format!(
                        "peer process `{}` sent no {tag} within {timeout:?}; killed it",
                        self.what
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    return Err(BenchError(format!(
                        "peer process `{}` exited ({}) before sending {tag}",
                        self.what,
                        describe(status)
                    )));
                }
            }
        }
    }

    /// Collects the child's final report (its peak RSS in KiB) and waits for
    /// it to exit cleanly, calling `drive` while waiting: a receiver keeps
    /// polling its channel so that the other side's final flush (which may
    /// wait for acknowledgements) completes.
    ///
    /// # Errors
    /// The child failed, exited non-zero, or did not finish within `timeout`.
    /// (An error from `drive` only stops the driving: the peer closing its
    /// end is how a clean finish looks from here.)
    pub fn finish(
        mut self,
        timeout: Duration,
        mut drive: impl FnMut() -> Result<()>,
    ) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut driving = true;
        let rss = loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    let (t, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    if t == "RSS" {
                        break rest.to_string();
                    }
                    if t == "ERROR" {
                        return Err(BenchError(format!("peer process failed: {rest}")));
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    if Instant::now() > deadline {
                        self.kill();
                        return Err(BenchError(format!(
                            "peer process `{}` did not finish within {timeout:?}; killed it",
                            self.what
                        )));
                    }
                    // The peer closing its end shows up here as an error
                    // once it is done: stop driving then, and keep waiting.
                    if driving && drive().is_err() {
                        driving = false;
                    }
                    std::thread::yield_now();
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(self.failure());
                }
            }
        };
        let rss_kib = rss.trim().parse::<u64>().unwrap_or(0);
        match self.wait_exit(timeout) {
            Some(s) if s.success() => Ok(rss_kib),
            other => Err(BenchError(format!(
                "peer process `{}` ended badly ({})",
                self.what,
                describe(other)
            ))),
        }
    }

    /// Waits for the child to exit (polling its status every millisecond,
    /// which is not synchronisation: the exit itself is the event); kills it
    /// when `timeout` passes first.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "did not exit in time; killed".to_string(),
    }
}

/// Child side: ask for SIGKILL when the parent dies, and check the parent
/// did not already die before that request took effect.
///
/// # Errors
/// `prctl` failed, or the parent is already gone.
pub fn child_init(parent_pid: u32) -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(BenchError(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    if u32::try_from(ppid).ok() != Some(parent_pid) {
        return Err(BenchError(format!(
            "parent {parent_pid} is gone (parent is now {ppid})"
        )));
    }
    Ok(())
}

/// Child side: sends one tagged line to the parent.
pub fn announce(tag: &str, rest: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{PREFIX}{tag} {rest}");
    let _ = out.flush();
}
