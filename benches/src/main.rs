//! conduit-bench: conduit against the physical limit and its peers, in one
//! run. See `conduit-bench help`.

mod channels;
mod cli;
mod compare;
mod diff;
mod error;
mod hist;
mod latency;
mod pin;
mod plot;
mod progress;
#[cfg(feature = "conduit")]
mod proto_harness;
mod report;
mod rss;
mod spawn;
mod throughput;
#[cfg(feature = "conduit")]
mod topology;
mod topology_iceoryx2;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};
use error::{BenchError, Result};
use report::Run;

/// A path given on the command line, as text.
fn path_text(p: &std::path::Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| BenchError(format!("path {} is not UTF-8", p.display())))
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Latency(a) => {
            let cfg = compare::latency_config(
                a.channel,
                a.common.size,
                a.round_trips.messages,
                a.round_trips.warmup,
                a.rate,
            );
            let r = a.channel.latency(&cfg)?;
            r.print();
            if let Some(path) = a.common.json {
                report::save(&path, Run::Latency(r))?;
            }
            Ok(())
        }
        Command::Throughput(a) => {
            let n = a
                .messages
                .unwrap_or_else(|| compare::default_throughput_messages(a.channel, a.common.size));
            let r = a.channel.throughput(a.common.size, n)?;
            r.print();
            if let Some(path) = a.common.json {
                report::save(&path, Run::Throughput(r))?;
            }
            Ok(())
        }
        Command::Compare(a) => compare::run(
            a.common.size,
            a.round_trips.messages,
            a.round_trips.warmup,
            a.channels,
            a.no_throughput,
            a.common.json.as_deref(),
            a.plot.as_deref(),
        ),
        Command::Report(a) => {
            let run = report::load(path_text(&a.file)?)?;
            run.print();
            if let Some(plot) = a.plot {
                let path = path_text(&plot)?;
                std::fs::write(path, run.plot()?)
                    .map_err(|e| BenchError(format!("cannot write {path}: {e}")))?;
                eprintln!("wrote {path}");
            }
            Ok(())
        }
        Command::Diff(a) => {
            let old = report::load(path_text(&a.old)?)?;
            let new = report::load(path_text(&a.new)?)?;
            diff::diff(&old, &new, a.threshold)
        }
        Command::Mpsc(a) if topology_iceoryx2::wanted(&a) => topology_iceoryx2::run(&a),
        Command::MpscSend(a) if a.channel == channels::Channel::Iceoryx2Mpsc => {
            topology_iceoryx2::peer_main(&a)
        }
        #[cfg(feature = "conduit")]
        Command::Mpsc(a) => topology::mpsc(
            a.publishers,
            a.common.size,
            a.messages,
            a.common.json.as_deref(),
        ),
        #[cfg(feature = "conduit")]
        Command::Fanout(a) => topology::fanout(
            &a.subscribers,
            a.common.size,
            a.messages,
            std::time::Duration::from_micros(a.pace_us),
            a.pin,
            a.sequential,
            a.common.json.as_deref(),
        ),
        #[cfg(feature = "conduit")]
        Command::MpscSend(a) => topology::peer_main("__mpsc-send", &a),
        #[cfg(feature = "conduit")]
        Command::FanoutSub(a) => topology::peer_main("__fanout-sub", &a),
        #[cfg(not(feature = "conduit"))]
        Command::Mpsc(_) | Command::Fanout(_) | Command::MpscSend(_) | Command::FanoutSub(_) => {
            Err(error::BenchError::msg("built without the conduit feature"))
        }
        Command::Pong(a) => channels::peer_main("__pong", &a),
        Command::PongPair(a) => channels::peer_main("__pong-pair", &a),
        Command::Send(a) => channels::peer_main("__send", &a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
