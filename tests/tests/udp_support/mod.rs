//! Test lab for the UDP system tests: network namespaces joined by veth
//! pairs to a bridge, impairment by `tc netem` (or, on kernels without
//! `sch_netem`, by the seeded `udp_relay` in the hub namespace), child
//! processes with deadlines, and teardown that always runs.
//!
//! Layout of a lab with N endpoints (names unique per run):
//! - `cdt<pid>x<k>h`: the hub, holding bridge `br0` with 10.77.0.254/24;
//! - `cdt<pid>x<k>e<i>`: endpoint i, with `eth0` = 10.77.0.(i+1)/24 on the
//!   bridge. The 10.77.0.0/24 range exists only inside these namespaces.
//!
//! Where root or `ip` is missing the lab cannot be built: tests print
//! `SKIP: <reason>` and return, except when `CI=true`, where that is a
//! failure (CI runs as root with iproute2 installed).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Address of the hub (and of the relay, when one is used).
pub const HUB_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);

/// Runs `ip`/`tc` and returns stdout, or an error with stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Deletes namespaces left behind by earlier runs whose process is gone
/// (a run killed by its watchdog cannot run `Drop`).
fn reap_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("cdt") else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// An impairment applied to both directions between an endpoint and the hub.
#[derive(Debug, Clone, Default)]
pub struct Impair {
    /// Fixed delay.
    pub delay: Option<Duration>,
    /// Extra random delay up to this.
    pub jitter: Option<Duration>,
    /// Random loss, percent.
    pub loss: f64,
    /// Burst loss: Gilbert-Elliott (p, r, loss in bad state, loss in good), percent.
    pub gemodel: Option<(f64, f64, f64, f64)>,
    /// Duplication, percent.
    pub duplicate: f64,
    /// Reordering, percent (needs a delay).
    pub reorder: f64,
    /// Corruption, percent.
    pub corrupt: f64,
    /// On-path attacker (relay only): replays of older datagrams, percent.
    pub replay: f64,
    /// On-path attacker (relay only): datagrams with 1-8 random bytes
    /// overwritten, percent.
    pub mutate: f64,
    /// On-path attacker (relay only): forged datagrams sent besides,
    /// percent.
    pub inject: f64,
}

fn us(d: Duration) -> String {
    format!("{}us", d.as_micros())
}

impl Impair {
    /// The `tc qdisc ... netem` arguments.
    pub fn netem_args(&self) -> Vec<String> {
        let mut a = vec!["netem".to_string()];
        let delay = self.delay.or(if self.reorder > 0.0 {
            Some(Duration::from_millis(1))
        } else {
            None
        });
        if let Some(d) = delay {
            a.extend(["delay".into(), us(d)]);
            if let Some(j) = self.jitter {
                a.push(us(j));
            }
        }
        if let Some((p, r, h, k)) = self.gemodel {
            a.extend([
                "loss".into(),
                "gemodel".into(),
                format!("{p}%"),
                format!("{r}%"),
                format!("{}%", 100.0 - h),
                format!("{}%", 100.0 - k),
            ]);
        } else if self.loss > 0.0 {
            a.extend(["loss".into(), format!("{}%", self.loss)]);
        }
        if self.duplicate > 0.0 {
            a.extend(["duplicate".into(), format!("{}%", self.duplicate)]);
        }
        if self.reorder > 0.0 {
            a.extend(["reorder".into(), format!("{}%", self.reorder)]);
        }
        if self.corrupt > 0.0 {
            a.extend(["corrupt".into(), format!("{}%", self.corrupt)]);
        }
        a
    }

    /// Whether only the relay can apply it (an attacker's knobs).
    pub fn relay_only(&self) -> bool {
        self.replay > 0.0 || self.mutate > 0.0 || self.inject > 0.0
    }

    /// The `udp_relay` spec string.
    pub fn relay_spec(&self) -> String {
        let mut a = Vec::new();
        if let Some(d) = self.delay {
            a.push(format!("delay={}", us(d)));
        }
        if let Some(j) = self.jitter {
            a.push(format!("jitter={}", us(j)));
        }
        if self.loss > 0.0 {
            a.push(format!("loss={}", self.loss));
        }
        if let Some((p, r, h, k)) = self.gemodel {
            a.push(format!("ge={p}/{r}/{h}/{k}"));
        }
        if self.duplicate > 0.0 {
            a.push(format!("dup={}", self.duplicate));
        }
        if self.reorder > 0.0 {
            a.push(format!("reorder={}", self.reorder));
        }
        if self.corrupt > 0.0 {
            a.push(format!("corrupt={}", self.corrupt));
        }
        if self.replay > 0.0 {
            a.push(format!("replay={}", self.replay));
        }
        if self.mutate > 0.0 {
            a.push(format!("mutate={}", self.mutate));
        }
        if self.inject > 0.0 {
            a.push(format!("inject={}", self.inject));
        }
        if a.is_empty() {
            "none".into()
        } else {
            a.join(",")
        }
    }
}

/// A set of namespaces torn down on drop.
pub struct Lab {
    hub: String,
    endpoints: Vec<String>,
    children: Arc<Mutex<Vec<u32>>>,
    netem: bool,
}

/// Builds a lab or reports why not: `None` after printing `SKIP` (outside
/// CI), a panic under `CI=true`.
pub fn lab_or_skip(endpoints: usize) -> Option<Lab> {
    match Lab::new(endpoints) {
        Ok(l) => Some(l),
        Err(reason) => {
            if std::env::var("CI")
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false)
            {
                panic!("network-namespace test cannot run in CI: {reason}");
            }
            eprintln!("SKIP: network-namespace test: {reason}");
            println!("SKIP: network-namespace test: {reason}");
            None
        }
    }
}

impl Lab {
    /// Creates the hub and `endpoints` endpoint namespaces.
    ///
    /// # Errors
    /// The reason the lab cannot be built here (not root, no `ip`, a failing command).
    pub fn new(endpoints: usize) -> Result<Lab, String> {
        if !is_root() {
            return Err("needs root (CAP_NET_ADMIN) to create network namespaces".into());
        }
        if !have("ip") {
            return Err("`ip` (iproute2) not found".into());
        }
        reap_stale();
        let k = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("cdt{}x{}", std::process::id(), k);
        let mut lab = Lab {
            hub: format!("{base}h"),
            endpoints: Vec::new(),
            children: Arc::new(Mutex::new(Vec::new())),
            netem: false,
        };
        run("ip", &["netns", "add", &lab.hub])?;
        let hub = lab.hub.clone();
        run("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(
            "ip",
            &["-n", &hub, "addr", "add", "10.77.0.254/24", "dev", "br0"],
        )?;
        run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..endpoints {
            let ns = format!("{base}e{i}");
            run("ip", &["netns", "add", &ns])?;
            lab.endpoints.push(ns.clone());
            let port = format!("p{i}");
            run(
                "ip",
                &[
                    "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", &hub, "link", "set", &port, "master", "br0"])?;
            run("ip", &["-n", &hub, "link", "set", &port, "up"])?;
            let addr = format!("10.77.0.{}/24", i + 1);
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        lab.netem = have("tc")
            && run(
                "tc",
                &[
                    "-n", &hub, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1us",
                ],
            )
            .is_ok();
        if lab.netem {
            let _ = run("tc", &["-n", &hub, "qdisc", "del", "dev", "lo", "root"]);
        } else {
            eprintln!(
                "note: kernel has no sch_netem (tc netem unavailable); impairments use the \
                 seeded udp_relay in the hub namespace"
            );
        }
        Ok(lab)
    }

    /// Whether impairments use kernel netem (else the relay).
    pub fn has_netem(&self) -> bool {
        self.netem
    }

    /// Name of the hub namespace (the bridge).
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Name of endpoint namespace `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.endpoints[i]
    }

    /// Address of endpoint `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, (i + 1) as u8)
    }

    /// Applies `imp` with kernel netem to both directions of endpoint `i`'s link.
    ///
    /// # Errors
    /// `tc` failures or no netem.
    pub fn netem(&self, i: usize, imp: &Impair) -> Result<(), String> {
        if !self.netem {
            return Err("no sch_netem in this kernel".into());
        }
        let args = imp.netem_args();
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let port = format!("p{i}");
        let mut a = vec!["-n", &self.hub, "qdisc", "replace", "dev", &port, "root"];
        a.extend(&args);
        run("tc", &a)?;
        let mut b = vec![
            "-n",
            &self.endpoints[i],
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
        ];
        b.extend(&args);
        run("tc", &b)?;
        Ok(())
    }

    /// Sets up the path from endpoint `from` to a service on endpoint `to`,
    /// port `port`, impaired by `imp`. Returns the address the sender must
    /// use (the service itself with netem, the relay otherwise) and the
    /// relay process if one was started.
    ///
    /// # Errors
    /// Setup failures.
    pub fn impaired_path(
        &self,
        from: usize,
        to: usize,
        port: u16,
        imp: &Impair,
        seed: u64,
        deadline: Duration,
    ) -> Result<(SocketAddr, Option<Node>), String> {
        let target = SocketAddr::from((self.addr(to), port));
        if self.netem && !imp.relay_only() {
            self.netem(from, imp)?;
            self.netem(to, imp)?;
            return Ok((target, None));
        }
        let a_side = SocketAddr::from((HUB_ADDR, port));
        let b_side = SocketAddr::from((HUB_ADDR, port.wrapping_add(1)));
        let mut relay = self.spawn(
            None,
            env!("CARGO_BIN_EXE_udp_relay"),
            &[
                &a_side.to_string(),
                &b_side.to_string(),
                &target.to_string(),
                &imp.relay_spec(),
                &seed.to_string(),
                &(deadline.as_secs() + 1).to_string(),
            ],
        )?;
        relay.expect_line("ready", Duration::from_secs(20))?;
        Ok((a_side, Some(relay)))
    }

    /// Starts `bin args` in endpoint namespace `ns` (`None`: the hub), with
    /// stdout piped for [`Node::expect_line`].
    ///
    /// # Errors
    /// Spawn failures.
    pub fn spawn(&self, ns: Option<usize>, bin: &str, args: &[&str]) -> Result<Node, String> {
        let name = match ns {
            Some(i) => self.endpoints[i].clone(),
            None => self.hub.clone(),
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", &name, bin])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        self.children.lock().unwrap().push(child.id());
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("piped");
        let label = format!("{}@{}", bin.rsplit('/').next().unwrap_or(bin), name);
        let lbl = label.clone();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                println!("[{lbl}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Node {
            child: Some(child),
            lines: rx,
            label,
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in self.children.lock().map(|c| c.clone()).unwrap_or_default() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for ns in self.endpoints.iter().chain(std::iter::once(&self.hub)) {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("lab teardown: {e}");
            }
        }
    }
}

/// A child process in a namespace; killed on drop.
pub struct Node {
    child: Option<Child>,
    lines: Receiver<String>,
    label: String,
}

impl Node {
    /// Waits for a stdout line starting with `prefix` and returns it.
    ///
    /// # Errors
    /// Timeout or the child closing stdout first.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{}: no line starting with {prefix:?} within {timeout:?}",
                        self.label
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    return Err(format!(
                        "{}: exited ({status:?}) before printing {prefix:?}",
                        self.label
                    ));
                }
            }
        }
    }

    /// Waits for the child to exit, killing it after `timeout`.
    ///
    /// # Errors
    /// Timeout (the child is killed).
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let end = Instant::now() + timeout;
        let child = self.child.as_mut().expect("child");
        loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(s);
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{}: still running after {timeout:?}, killed",
                    self.label
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// All remaining stdout lines up to now (non-blocking).
    pub fn drain_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
