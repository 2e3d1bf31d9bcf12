//! `iceoryx2`: the peer for zero-copy shared-memory IPC. Two processes, two
//! publish-subscribe `ipc::Service`s (ping→pong and pong→ping) of `[u8]`
//! slices; each message is loaned from the publisher's shared memory, written
//! in place and sent; both sides spin on `receive`. `iceoryx2-mpsc`: the
//! same on services opened for [`MPSC_PUBLISHERS`] publishers, one active
//! (the peer of conduit's `shm-mpsc`).

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use super::{ping_with_peer, unique_name, Channel, PeerArgs};
use crate::error::{BenchError, Result};
use crate::latency::{run_pong, seq_of, LatencyConfig, PingEnd, PongEnd};
use crate::report::LatencyResult;

type Service = PortFactory<ipc::Service, [u8], ()>;

/// Publishers an `iceoryx2-mpsc` service is opened for.
pub const MPSC_PUBLISHERS: usize = 4;

/// The publishers `channel`'s services are opened for.
fn max_publishers(channel: Channel) -> usize {
    if channel == Channel::Iceoryx2Mpsc {
        MPSC_PUBLISHERS
    } else {
        1
    }
}

fn err(what: &str, e: impl std::fmt::Debug) -> BenchError {
    BenchError(format!("iceoryx2 {what}: {e:?}"))
}

/// The two services of one run, named `<base>/a2b` and `<base>/b2a`.
struct Services {
    a2b: Service,
    b2a: Service,
    // Declared last so it drops last: the services and ports belong to it.
    _node: Node<ipc::Service>,
}

impl Services {
    fn open(base: &str, publishers: usize, create: bool) -> Result<Services> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| err("node", e))?;
        let make = |dir: &str| -> Result<Service> {
            let name =
                ServiceName::new(&format!("{base}/{dir}")).map_err(|e| err("service name", e))?;
            let builder = node
                .service_builder(&name)
                .publish_subscribe::<[u8]>()
                .max_publishers(publishers)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(1)
                .enable_safe_overflow(true);
            if create {
                builder.create().map_err(|e| err("create service", e))
            } else {
                builder.open().map_err(|e| err("open service", e))
            }
        };
        Ok(Services {
            a2b: make("a2b")?,
            b2a: make("b2a")?,
            _node: node,
        })
    }
}

fn publisher(s: &Service, size: usize) -> Result<Publisher<ipc::Service, [u8], ()>> {
    s.publisher_builder()
        .initial_max_slice_len(size)
        .create()
        .map_err(|e| err("publisher", e))
}

fn subscriber(s: &Service) -> Result<Subscriber<ipc::Service, [u8], ()>> {
    s.subscriber_builder()
        .create()
        .map_err(|e| err("subscriber", e))
}

/// Loans a slice from shared memory, writes `msg` into it and sends it.
fn send(p: &Publisher<ipc::Service, [u8], ()>, msg: &[u8]) -> Result<()> {
    let sample = p.loan_slice_uninit(msg.len()).map_err(|e| err("loan", e))?;
    let delivered = sample
        .write_from_slice(msg)
        .send()
        .map_err(|e| err("send", e))?;
    if delivered == 0 {
        return Err(BenchError::msg("iceoryx2 send: no subscriber connected"));
    }
    Ok(())
}

struct Ping {
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    size: usize,
    _services: Services,
}

impl PingEnd for Ping {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        send(&self.publisher, msg)
    }

    fn try_recv(&mut self) -> Result<Option<u64>> {
        match self.subscriber.receive().map_err(|e| err("receive", e))? {
            Some(sample) => seq_of(sample.payload(), self.size).map(Some),
            None => Ok(None),
        }
    }
}

struct Pong {
    publisher: Publisher<ipc::Service, [u8], ()>,
    subscriber: Subscriber<ipc::Service, [u8], ()>,
    size: usize,
}

impl PongEnd for Pong {
    fn try_echo(&mut self) -> Result<Option<u64>> {
        match self.subscriber.receive().map_err(|e| err("receive", e))? {
            Some(sample) => {
                let seq = seq_of(sample.payload(), self.size)?;
                send(&self.publisher, sample.payload())?;
                Ok(Some(seq))
            }
            None => Ok(None),
        }
    }
}

/// Runs the `iceoryx2` or `iceoryx2-mpsc` latency test.
///
/// # Errors
/// iceoryx2 setup failed, or the run failed.
pub fn latency(channel: Channel, cfg: &LatencyConfig) -> Result<LatencyResult> {
    let base = format!("conduit-bench/{}", unique_name("iox2"));
    let services = Services::open(&base, max_publishers(channel), true)?;
    let publisher = publisher(&services.a2b, cfg.size)?;
    let subscriber = subscriber(&services.b2a)?;
    ping_with_peer(channel.name(), cfg, &base, move |_| {
        Ok(Ping {
            publisher,
            subscriber,
            size: cfg.size,
            _services: services,
        })
    })
}

/// The pong side of `iceoryx2` and `iceoryx2-mpsc`: `param` is the
/// services' base name.
///
/// # Errors
/// iceoryx2 setup failed, or the run failed.
pub fn pong(args: &PeerArgs, ready: impl FnOnce(&str)) -> Result<()> {
    let services = Services::open(&args.param, max_publishers(args.channel), false)?;
    let subscriber = subscriber(&services.a2b)?;
    let publisher = publisher(&services.b2a, args.size)?;
    let mut pong = Pong {
        publisher,
        subscriber,
        size: args.size,
    };
    ready("");
    run_pong(&mut pong, args.count)
}
