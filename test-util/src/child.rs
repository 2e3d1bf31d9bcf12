//! Child processes of a test: helper processes that report on stdout line
//! by line ([`LineChild`]), and waiting for a child under a deadline
//! ([`wait_output`]).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A helper process whose stdout lines arrive on [`lines`](Self::lines)
/// (read on a thread of their own); killed on drop.
#[derive(Debug)]
pub struct LineChild {
    child: Child,
    what: String,
    /// Its stdout, line by line.
    pub lines: mpsc::Receiver<String>,
}

impl LineChild {
    /// Starts `cmd` with its stdout piped; `what` names it in failures.
    ///
    /// # Panics
    /// The process cannot be started.
    ///
    /// ```
    /// use conduit_test_util::LineChild;
    /// use std::time::Duration;
    /// let mut cmd = std::process::Command::new("sh");
    /// cmd.args(["-c", "echo hello; echo ready 7"]);
    /// let child = LineChild::spawn(cmd, "sh");
    /// assert_eq!(child.expect_line("ready", Duration::from_secs(60)), "ready 7");
    /// child.wait_success();
    /// ```
    pub fn spawn(mut cmd: Command, what: &str) -> LineChild {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineChild {
            child,
            what: what.to_owned(),
            lines,
        }
    }

    /// Waits up to `timeout` for a line starting with `prefix`, skipping
    /// others, and returns it.
    ///
    /// # Panics
    /// No such line in time, or stdout closed first.
    ///
    /// ```
    /// # use conduit_test_util::LineChild;
    /// # use std::time::Duration;
    /// # let mut cmd = std::process::Command::new("echo");
    /// # cmd.arg("ok 3");
    /// let child = LineChild::spawn(cmd, "echo");
    /// assert_eq!(child.expect_line("ok", Duration::from_secs(60)), "ok 3");
    /// ```
    pub fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        loop {
            match self.lines.recv_timeout(timeout) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(e) => panic!("{} printed no {prefix:?}: {e}", self.what),
            }
        }
    }

    /// Sends signal `sig` to the process.
    ///
    /// # Panics
    /// `kill(2)` fails.
    ///
    /// ```
    /// # use conduit_test_util::LineChild;
    /// # let mut cmd = std::process::Command::new("sleep");
    /// # cmd.arg("60");
    /// let child = LineChild::spawn(cmd, "sleep");
    /// child.signal(libc::SIGSTOP);
    /// child.signal(libc::SIGCONT);
    /// ```
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped (`wait`
        // takes the child by value or kills it first).
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({sig}) of {}", self.what);
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    ///
    /// ```
    /// # use conduit_test_util::LineChild;
    /// # let mut cmd = std::process::Command::new("sleep");
    /// # cmd.arg("60");
    /// let mut child = LineChild::spawn(cmd, "sleep");
    /// child.kill9();
    /// ```
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for the process to exit and checks that it succeeded.
    ///
    /// # Panics
    /// It failed, or cannot be waited for.
    ///
    /// ```
    /// # use conduit_test_util::LineChild;
    /// LineChild::spawn(std::process::Command::new("true"), "true").wait_success();
    /// ```
    pub fn wait_success(mut self) {
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "{} failed: {status}", self.what);
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` and collects its output, for at most `limit`: past it,
/// kills the child and panics with what it printed (`what` names it). Piped
/// stdout and stderr are drained on threads meanwhile, so a chatty child
/// never blocks on a full pipe.
///
/// # Panics
/// The deadline passed, or the child cannot be waited for.
///
/// ```
/// use std::process::{Command, Stdio};
/// use std::time::Duration;
/// let child = Command::new("echo").arg("hi").stdout(Stdio::piped()).spawn()?;
/// let out = conduit_test_util::wait_output(child, "echo", Duration::from_secs(60));
/// assert!(out.status.success());
/// assert_eq!(out.stdout, b"hi\n");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn wait_output(mut child: Child, what: &str, limit: Duration) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            panic!(
                "watchdog: {what} still running after {limit:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    }
}
