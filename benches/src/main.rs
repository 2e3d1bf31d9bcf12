//! conduit-bench: conduit against the physical limit and its peers, in one
//! run. See `conduit-bench help`.

mod channels;
mod cli;
mod compare;
mod error;
mod hist;
mod json;
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

use std::process::ExitCode;

use cli::Command;
use error::Result;

fn run(command: Command) -> Result<()> {
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(())
        }
        Command::Latency {
            channel,
            size,
            messages,
            warmup,
            rate,
            json,
        } => {
            let cfg = compare::latency_config(channel, size, messages, warmup, rate);
            let r = channel.latency(&cfg)?;
            r.print();
            if let Some(path) = json {
                report::write_json(&path, &r.to_json())?;
            }
            Ok(())
        }
        Command::Throughput {
            channel,
            size,
            messages,
            json,
        } => {
            let n = messages.unwrap_or_else(|| compare::default_throughput_messages(channel, size));
            let r = channel.throughput(size, n)?;
            r.print();
            if let Some(path) = json {
                report::write_json(&path, &r.to_json())?;
            }
            Ok(())
        }
        Command::Compare {
            size,
            messages,
            warmup,
            channels,
            no_throughput,
            json,
            plot,
        } => compare::run(
            size,
            messages,
            warmup,
            channels,
            no_throughput,
            json.as_deref(),
            plot.as_deref(),
        ),
        Command::Peer { role, args } => channels::peer_main(&role, &args),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = cli::parse(&args).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
