//! The command line (clap derive): `compare`, `latency`, `throughput`,
//! `report`, `diff`, and the hidden peer subcommands `__pong` /
//! `__pong-pair` / `__send`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[cfg(test)]
use crate::channels::Wait;
use crate::channels::{Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::topology_iceoryx2::{Iox2Mode, MpscChannel};

/// The channels, as `help` lists them.
pub const CHANNELS: &str = "\
CHANNELS:
  limit       one cache line bounced between two processes (the physical limit)
  limit-2line two cache lines, one written by each process: the floor for any
              design with a separate channel per direction
  limit-ring  a fresh line per message each way, as a 1 MiB ring moves through
              memory: the hardware cost of a ring, with no software in it
  shm         conduit over shared memory, two processes
  shm-mpsc    shm on a ring opened for 4 publishers, one active
  crossbeam   crossbeam-channel, two threads
  iceoryx2    iceoryx2 publish-subscribe, two processes
  iceoryx2-mpsc
              iceoryx2 on services opened for 4 publishers, one active
              (the peer of shm-mpsc)
  udp-raw     plain non-blocking UDP sockets on 127.0.0.1, two processes
  udp, udp-uring, udp-socket
              conduit over UDP on 127.0.0.1 (default / io_uring / socket driver)
  udp-aead    udp with a pre-shared key (key=PATH, a fresh 0600 key file):
              every datagram encrypted and authenticated
  udp-multicast
              conduit over UDP multicast: a group publication to a group
              subscription each way (239.255.0.N, iface=127.0.0.1), both
              processes in a private network namespace (needs root; skipped
              by compare otherwise)
  udp-netns   udp in such a namespace: the unicast control of udp-multicast
  udp-multicast-veth
              udp-multicast across a veth pair between two network namespaces
              (ping in one, pong in the other; iface= each side's veth
              address): no sender's namespace has a member of its group, as
              between two hosts (needs root; skipped by compare otherwise)
  udp-veth    udp across that veth pair: the unicast control of
              udp-multicast-veth
  udp-raw-veth, udp-raw-multicast-veth
              the bare-socket floors of udp-veth and udp-multicast-veth
  udp-raw-block
              udp-raw with blocking sockets: each side asleep in recv
  udp-block, udp-uring-block, udp-socket-block
              conduit over UDP, each subscription waiting in the kernel
              (wait=block); compared with udp-raw-block
  proto, proto-loss
              conduit's protocol core in memory (throughput only; 0 % / 1 % loss)

Sizes take k/m suffixes (KiB/MiB); counts take k/m (thousands/millions).
With two or more CPUs, ping and pong are pinned to separate cores.";

/// conduit-bench: conduit against the physical limit and its peers, in one run.
#[derive(Debug, Parser)]
#[command(name = "conduit-bench", version, after_help = CHANNELS)]
pub struct Cli {
    /// What to run (without one: this help).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Command {
    /// Every channel's round trip in one run, each against the `limit` runs
    /// just before and after it; conduit over UDP interleaved with the bare
    /// socket; one-way throughput rows.
    #[command(after_help = compare_after_help())]
    Compare(CompareArgs),
    /// Round-trip latency of one channel.
    #[command(after_help = CHANNELS)]
    Latency(LatencyArgs),
    /// One-way throughput of one channel.
    #[command(after_help = CHANNELS)]
    Throughput(ThroughputArgs),
    /// Prints the tables of a saved run (`--json`) again, and redraws its
    /// percentile plot from the raw histograms kept in the file.
    Report(ReportArgs),
    /// Compares two saved runs figure by figure (p50 and p99 per channel,
    /// throughput); fails when any figure is worse than the threshold.
    Diff(DiffArgs),
    /// `shm-mpsc` throughput with N publisher processes into one
    /// subscriber: the total and each publisher's share; fails when a
    /// publisher gets less than 1/(2N) of the messages (starvation).
    /// `--channels shm-mpsc,iceoryx2-mpsc` adds iceoryx2 with N publishers.
    Mpsc(MpscArgs),
    /// The publisher's cost per offer with 1, 8, 64 (or the given numbers
    /// of) subscriber processes asleep in `wait=block`.
    Fanout(FanoutArgs),
    /// Peer process: one publisher of `mpsc`.
    #[command(name = "__mpsc-send", hide = true)]
    MpscSend(PeerArgs),
    /// Peer process: one subscriber of `fanout`.
    #[command(name = "__fanout-sub", hide = true)]
    FanoutSub(PeerArgs),
    /// Peer process: echoes round trips.
    #[command(name = "__pong", hide = true)]
    Pong(PeerArgs),
    /// Peer process: echoes two interleaved channels.
    #[command(name = "__pong-pair", hide = true)]
    PongPair(PeerArgs),
    /// Peer process: sends a throughput stream.
    #[command(name = "__send", hide = true)]
    Send(PeerArgs),
}

fn compare_after_help() -> String {
    format!(
        "PEERS (each at the settings a user would choose for speed, with the \
         buffer bytes of conduit's default 1 MiB ring):\n{}\n\n{CHANNELS}",
        crate::channels::PEERS
            .iter()
            .map(|(name, config)| format!("  {name:<13} {config}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Options every run has: the payload size and the JSON output.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct Common {
    /// Payload bytes (8 or more; `mpsc` and `fanout` 16 or more).
    #[arg(long, value_name = "BYTES", default_value = "32", value_parser = parse_size)]
    pub size: usize,
    /// Write the result as JSON (round trips with their raw histograms).
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
}

/// How many round trips a latency run makes.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct RoundTrips {
    /// Measured round trips (per channel; the default depends on the channel).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub messages: Option<u64>,
    /// Warm-up round trips (default: a tenth of the measured ones).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub warmup: Option<u64>,
}

/// `compare`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct CompareArgs {
    /// Size and JSON output.
    #[command(flatten)]
    pub common: Common,
    /// Round trips.
    #[command(flatten)]
    pub round_trips: RoundTrips,
    /// Channels to run (default: all but `limit`, which runs between them anyway).
    #[arg(long, value_name = "a,b,..", value_delimiter = ',', value_parser = Channel::parse)]
    pub channels: Option<Vec<Channel>>,
    /// Skip the throughput rows.
    #[arg(long)]
    pub no_throughput: bool,
    /// Write the percentile plot as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<String>,
}

/// `latency`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct LatencyArgs {
    /// Channel to test.
    #[arg(long, value_name = "NAME", value_parser = Channel::parse)]
    pub channel: Channel,
    /// Size and JSON output.
    #[command(flatten)]
    pub common: Common,
    /// Round trips.
    #[command(flatten)]
    pub round_trips: RoundTrips,
    /// Fixed send rate; each round trip is timed from its intended send time.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,
}

/// `throughput`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ThroughputArgs {
    /// Channel to test.
    #[arg(long, value_name = "NAME", value_parser = Channel::parse)]
    pub channel: Channel,
    /// Size and JSON output.
    #[command(flatten)]
    pub common: Common,
    /// Messages (default depends on the size).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub messages: Option<u64>,
}

/// `mpsc`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct MpscArgs {
    /// Publisher processes (the channel is opened with `publishers=N`).
    #[arg(long, value_name = "N", default_value = "2")]
    pub publishers: u32,
    /// Size and JSON output.
    #[command(flatten)]
    pub common: Common,
    /// Messages in the timed window (it opens once every publisher was heard).
    #[arg(long, value_name = "N", default_value = "5m", value_parser = parse_count)]
    pub messages: u64,
    /// Channels to run: `shm-mpsc` (conduit), `iceoryx2-mpsc` (iceoryx2
    /// publish-subscribe with `max_publishers(N)`), or both, one after the
    /// other.
    #[arg(
        long,
        value_name = "a,b",
        value_delimiter = ',',
        default_value = "shm-mpsc",
        value_parser = MpscChannel::parse
    )]
    pub channels: Vec<MpscChannel>,
    /// Runs of each channel, alternating; with more than one run, a summary
    /// (median, min, max) follows.
    #[arg(long, value_name = "R", default_value = "1")]
    pub rounds: u32,
    /// What an iceoryx2 publisher does when the subscriber's queue is full:
    /// `retry` (iceoryx2 waits inside send, no loss), `spin` (send again,
    /// no loss) or `overflow` (the queue drops its oldest message; the
    /// losses are counted).
    #[arg(long, value_name = "MODE", default_value = "retry", value_parser = Iox2Mode::parse)]
    pub iceoryx2: Iox2Mode,
}

/// `fanout`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct FanoutArgs {
    /// Subscriber counts to run, one run each (at most 1024).
    #[arg(
        long,
        value_name = "a,b,..",
        value_delimiter = ',',
        default_value = "1,8,64"
    )]
    pub subscribers: Vec<u32>,
    /// Size and JSON output.
    #[command(flatten)]
    pub common: Common,
    /// Offers per run.
    #[arg(long, value_name = "N", default_value = "20k", value_parser = parse_count)]
    pub messages: u64,
    /// Microseconds from one offer to the next (the subscribers fall
    /// asleep again in between).
    #[arg(long, value_name = "US", default_value = "200")]
    pub pace_us: u64,
    /// Pin the publisher to the first allowed CPU and the subscribers to
    /// the others, so that no woken subscriber runs on the publisher's CPU.
    #[arg(long)]
    pub pin: bool,
    /// Run the subscriber counts one after another instead of interleaving
    /// their offers (each count then meets the host's state of its own
    /// stretch of time).
    #[arg(long)]
    pub sequential: bool,
}

/// `report`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ReportArgs {
    /// A run saved with `--json`.
    #[arg(value_name = "FILE.json")]
    pub file: PathBuf,
    /// Draw the percentile plot from the saved histograms.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `diff`'s options.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DiffArgs {
    /// The earlier run (`--json`).
    #[arg(value_name = "OLD.json")]
    pub old: PathBuf,
    /// The later run (`--json`).
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// How much worse, in percent, a figure may get before `diff` fails.
    #[arg(long, value_name = "PCT", default_value = "10", value_parser = parse_threshold)]
    pub threshold: f64,
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

fn parse_rate(s: &str) -> Result<f64> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(BenchError(format!(
            "`{s}` is not a positive rate in msgs/s"
        ))),
    }
}

fn parse_threshold(s: &str) -> Result<f64> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(BenchError(format!(
            "`{s}` is not a percentage (e.g. 5, 12.5)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(s: &str) -> std::result::Result<Option<Command>, clap::Error> {
        Cli::try_parse_from(std::iter::once("conduit-bench").chain(s.split_whitespace()))
            .map(|c| c.command)
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_commands_and_rejects_bad_input() {
        assert_eq!(parse("").unwrap(), None);
        match parse("latency --channel shm --size 1k --messages 10k --rate 1000").unwrap() {
            Some(Command::Latency(a)) => {
                assert_eq!(a.channel, Channel::Shm);
                assert_eq!(a.common.size, 1024);
                assert_eq!(a.round_trips.messages, Some(10_000));
                assert_eq!(a.rate, Some(1000.0));
            }
            c => panic!("{c:?}"),
        }
        match parse("compare --channels limit,udp-raw --no-throughput --plot p.svg").unwrap() {
            Some(Command::Compare(a)) => {
                assert_eq!(
                    a.channels,
                    Some(vec![Channel::LIMIT, Channel::UdpRaw(Wait::Spin)])
                );
                assert!(a.no_throughput);
                assert_eq!(a.plot.as_deref(), Some("p.svg"));
                assert_eq!(a.common.size, 32);
            }
            c => panic!("{c:?}"),
        }
        match parse("diff a.json b.json --threshold 5").unwrap() {
            Some(Command::Diff(a)) => assert_eq!(a.threshold, 5.0),
            c => panic!("{c:?}"),
        }
        match parse("__send --channel shm --size 32 --count 2m --param x --parent 7").unwrap() {
            Some(Command::Send(a)) => {
                assert_eq!((a.count, a.parent, a.cpu), (2_000_000, 7, None));
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
            "diff a.json",
            "diff a.json b.json --threshold -3",
            "frobnicate",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
