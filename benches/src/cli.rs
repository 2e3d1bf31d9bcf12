//! Command-line parsing: `latency`, `throughput`, `compare`, and the hidden
//! peer subcommands `__pong` / `__pong-pair` / `__send`.

use crate::channels::{Channel, PeerArgs};
use crate::error::{BenchError, Result};

/// Usage text.
pub const USAGE: &str = "\
conduit-bench: conduit against the physical limit and its peers, in one run

USAGE:
  conduit-bench compare [--size BYTES] [--messages N] [--warmup N]
                        [--channels a,b,..] [--no-throughput]
                        [--json FILE] [--plot FILE.svg]
  conduit-bench latency --channel NAME [--size BYTES] [--messages N]
                        [--warmup N] [--rate MSGS_PER_SEC] [--json FILE]
  conduit-bench throughput --channel NAME [--size BYTES] [--messages N]
                        [--json FILE]

CHANNELS:
  limit       one cache line bounced between two processes (the physical limit)
  limit-2line two cache lines, one written by each process: the floor for any
              design with a separate channel per direction
  limit-ring  a fresh line per message each way, as a 1 MiB ring moves through
              memory: the hardware cost of a ring, with no software in it
  shm         conduit over shared memory, two processes
  crossbeam   crossbeam-channel, two threads
  iceoryx2    iceoryx2 publish-subscribe, two processes
  udp-raw     plain non-blocking UDP sockets on 127.0.0.1, two processes
  udp, udp-uring, udp-socket
              conduit over UDP on 127.0.0.1 (default / io_uring / socket driver)
  udp-aead    udp with a pre-shared key (key=PATH, a fresh 0600 key file):
              every datagram encrypted and authenticated
  udp-raw-block
              udp-raw with blocking sockets: each side asleep in recv
  udp-block, udp-uring-block, udp-socket-block
              conduit over UDP, each subscription waiting in the kernel
              (wait=block); compared with udp-raw-block
  proto, proto-loss
              conduit's protocol core in memory (throughput only; 0 % / 1 % loss)

Sizes take k/m suffixes (KiB/MiB); counts take k/m (thousands/millions).
With two or more CPUs, ping and pong are pinned to separate cores.
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print usage.
    Help,
    /// Round-trip latency of one channel.
    Latency {
        /// Channel to test.
        channel: Channel,
        /// Payload bytes.
        size: usize,
        /// Measured round trips (default depends on the channel).
        messages: Option<u64>,
        /// Warm-up round trips.
        warmup: Option<u64>,
        /// Fixed send rate.
        rate: Option<f64>,
        /// JSON output file.
        json: Option<String>,
    },
    /// One-way throughput of one channel.
    Throughput {
        /// Channel to test.
        channel: Channel,
        /// Payload bytes.
        size: usize,
        /// Messages (default depends on the size).
        messages: Option<u64>,
        /// JSON output file.
        json: Option<String>,
    },
    /// Every channel in one run against interleaved `limit` runs.
    Compare {
        /// Payload bytes for the latency tests.
        size: usize,
        /// Measured round trips per channel (default depends on the channel).
        messages: Option<u64>,
        /// Warm-up round trips per channel.
        warmup: Option<u64>,
        /// Channels (`None`: the default set).
        channels: Option<Vec<Channel>>,
        /// Skip the throughput rows.
        no_throughput: bool,
        /// JSON output file.
        json: Option<String>,
        /// SVG plot file.
        plot: Option<String>,
    },
    /// Peer process (hidden): `__pong` or `__send`.
    Peer {
        /// `__pong` or `__send`.
        role: String,
        /// What to run.
        args: PeerArgs,
    },
}

/// Parses `1000`, `10k` (thousands), `2m` (millions).
///
/// # Errors
/// Not a count.
pub fn parse_count(s: &str) -> Result<u64> {
    let (num, mult) = split_suffix(s, 1_000, 1_000_000);
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| BenchError(format!("`{s}` is not a count (e.g. 1000, 10k, 2m)")))
}

/// Parses `32`, `1k` (KiB), `1m` (MiB).
///
/// # Errors
/// Not a size.
pub fn parse_size(s: &str) -> Result<usize> {
    let (num, mult) = split_suffix(s, 1024, 1024 * 1024);
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult as usize))
        .ok_or_else(|| BenchError(format!("`{s}` is not a size in bytes (e.g. 32, 1k, 64k)")))
}

fn split_suffix(s: &str, k: u64, m: u64) -> (&str, u64) {
    if let Some(n) = s.strip_suffix(['k', 'K']) {
        (n, k)
    } else if let Some(n) = s.strip_suffix(['m', 'M']) {
        (n, m)
    } else {
        (s, 1)
    }
}

/// The `--key value` options after the subcommand.
struct Opts {
    pairs: Vec<(String, Option<String>)>,
}

impl Opts {
    fn parse(args: &[String], flags: &[&str]) -> Result<Opts> {
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(BenchError(format!("unexpected argument `{a}`")));
            };
            if let Some((k, v)) = key.split_once('=') {
                pairs.push((k.to_string(), Some(v.to_string())));
            } else if flags.contains(&key) {
                pairs.push((key.to_string(), None));
            } else {
                let v = it
                    .next()
                    .ok_or_else(|| BenchError(format!("--{key} needs a value")))?;
                pairs.push((key.to_string(), Some(v.clone())));
            }
        }
        Ok(Opts { pairs })
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        self.pairs.remove(i).1
    }

    fn flag(&mut self, key: &str) -> bool {
        match self.pairs.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.pairs.remove(i);
                true
            }
            None => false,
        }
    }

    fn finish(self) -> Result<()> {
        match self.pairs.first() {
            Some((k, _)) => Err(BenchError(format!("unknown or repeated option --{k}"))),
            None => Ok(()),
        }
    }
}

fn channel_opt(o: &mut Opts) -> Result<Channel> {
    let name = o
        .take("channel")
        .ok_or_else(|| BenchError::msg("--channel NAME is required"))?;
    Channel::parse(&name)
}

fn opt<T>(o: &mut Opts, key: &str, parse: fn(&str) -> Result<T>) -> Result<Option<T>> {
    o.take(key)
        .map(|v| parse(&v).map_err(|e| e.context(&format!("--{key}"))))
        .transpose()
}

fn parse_rate(s: &str) -> Result<f64> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(BenchError(format!(
            "`{s}` is not a positive rate in msgs/s"
        ))),
    }
}

fn parse_pid(s: &str) -> Result<u32> {
    s.parse()
        .map_err(|_| BenchError(format!("`{s}` is not a pid")))
}

fn parse_cpu(s: &str) -> Result<usize> {
    s.parse()
        .map_err(|_| BenchError(format!("`{s}` is not a cpu number")))
}

/// Parses the arguments after the program name.
///
/// # Errors
/// Unknown subcommand or option, missing or malformed value.
pub fn parse(args: &[String]) -> Result<Command> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    let flags = ["no-throughput", "help"];
    let mut o = Opts::parse(rest, &flags)?;
    if o.flag("help") {
        return Ok(Command::Help);
    }
    let command = match cmd.as_str() {
        "help" | "-h" | "--help" => Command::Help,
        "latency" => Command::Latency {
            channel: channel_opt(&mut o)?,
            size: opt(&mut o, "size", parse_size)?.unwrap_or(32),
            messages: opt(&mut o, "messages", parse_count)?,
            warmup: opt(&mut o, "warmup", parse_count)?,
            rate: opt(&mut o, "rate", parse_rate)?,
            json: o.take("json"),
        },
        "throughput" => Command::Throughput {
            channel: channel_opt(&mut o)?,
            size: opt(&mut o, "size", parse_size)?.unwrap_or(32),
            messages: opt(&mut o, "messages", parse_count)?,
            json: o.take("json"),
        },
        "compare" => Command::Compare {
            size: opt(&mut o, "size", parse_size)?.unwrap_or(32),
            messages: opt(&mut o, "messages", parse_count)?,
            warmup: opt(&mut o, "warmup", parse_count)?,
            channels: o
                .take("channels")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(Channel::parse)
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            no_throughput: o.flag("no-throughput"),
            json: o.take("json"),
            plot: o.take("plot"),
        },
        role @ ("__pong" | "__pong-pair" | "__send") => Command::Peer {
            role: role.to_string(),
            args: PeerArgs {
                channel: channel_opt(&mut o)?,
                size: opt(&mut o, "size", parse_size)?
                    .ok_or_else(|| BenchError::msg("--size is required"))?,
                count: opt(&mut o, "count", parse_count)?
                    .ok_or_else(|| BenchError::msg("--count is required"))?,
                param: o.take("param").unwrap_or_default(),
                cpu: opt(&mut o, "cpu", parse_cpu)?,
                parent: opt(&mut o, "parent", parse_pid)?
                    .ok_or_else(|| BenchError::msg("--parent is required"))?,
            },
        },
        other => {
            return Err(BenchError(format!(
                "unknown command `{other}` (try `conduit-bench help`)"
            )))
        }
    };
    o.finish()?;
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_commands_and_rejects_bad_input() {
        assert_eq!(parse(&[]).unwrap(), Command::Help);
        match parse(&args(
            "latency --channel shm --size 1k --messages 10k --rate 1000",
        ))
        .unwrap()
        {
            Command::Latency {
                channel,
                size,
                messages,
                rate,
                ..
            } => {
                assert_eq!(channel, Channel::Shm);
                assert_eq!(size, 1024);
                assert_eq!(messages, Some(10_000));
                assert_eq!(rate, Some(1000.0));
            }
            c => panic!("{c:?}"),
        }
        match parse(&args(
            "compare --channels limit,udp-raw --no-throughput --plot p.svg",
        ))
        .unwrap()
        {
            Command::Compare {
                channels,
                no_throughput,
                plot,
                ..
            } => {
                assert_eq!(channels, Some(vec![Channel::Limit, Channel::UdpRaw]));
                assert!(no_throughput);
                assert_eq!(plot.as_deref(), Some("p.svg"));
            }
            c => panic!("{c:?}"),
        }
        for bad in [
            "latency",
            "latency --channel nope",
            "latency --channel shm --size x",
            "latency --channel shm --bogus 1",
            "latency --channel shm --rate -1",
            "latency --channel shm --messages",
            "frobnicate",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
