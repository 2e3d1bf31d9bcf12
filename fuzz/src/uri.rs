//! `uri_parse`: channel URI parsing, for `shm:` and `udp://`, without opening
//! anything.
//!
//! [`ChannelUri::parse`] is the public entry of `Publication::open` and
//! `Subscription::open`. A `udp://` URI then goes through
//! [`UdpOptions::from_uri`] (every UDP option), but only for a literal IP host:
//! a host name would be resolved, which is I/O. The `shm:` options are parsed
//! by a crate-private function, so this harness takes the same keys with the
//! same public `take_*` calls (keep the list in step with `shm::options`).
//!
//! Invariants: no panic; a parsed URI parses again to the same scheme; an
//! accepted UDP configuration has an MTU in range and a power-of-two window.

use std::net::IpAddr;

use conduit::udp::UdpOptions;
use conduit::uri::{ChannelUri, Scheme, MAX_URI_LEN};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let uri = match ChannelUri::parse(s) {
        Ok(u) => u,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(
        s.len() <= MAX_URI_LEN,
        "accepted a URI of {} bytes",
        s.len()
    );
    let again = ChannelUri::parse(uri.as_str()).expect("a parsed URI parses again");
    assert_eq!(again.scheme, uri.scheme, "parsing is not stable");
    match uri.scheme.clone() {
        Scheme::Shm { name } => {
            assert!(!name.is_empty() && !name.contains('/'), "bad name {name:?}");
            shm_options(uri);
        }
        Scheme::Udp { host, .. } => {
            if host.parse::<IpAddr>().is_ok() {
                match UdpOptions::from_uri(uri) {
                    Ok(o) => {
                        assert!(
                            (conduit_proto::MIN_MTU..=conduit_proto::MAX_MTU)
                                .contains(&o.proto.mtu),
                            "accepted mtu {}",
                            o.proto.mtu
                        );
                        assert!(o.proto.window.is_power_of_two());
                        let _ = o.memory_bound(true);
                        let _ = o.memory_bound(false);
                    }
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            } else {
                generic_options(uri);
            }
        }
    }
}

/// The keys `shm:` takes, with the same calls (see the module docs).
fn shm_options(mut uri: ChannelUri) {
    let r = (|| {
        uri.take_size("capacity")?;
        uri.take_size("max_msg")?;
        uri.take_u64("subscribers")?;
        uri.take_str("mode");
        uri.take_str("dir");
        uri.take_choice("wait", &["spin", "yield", "block"])?;
        uri.finish()
    })();
    if let Err(e) = r {
        let _ = e.to_string();
    }
}

/// Every value parser on the keys of a URI whose host would need resolving.
fn generic_options(mut uri: ChannelUri) {
    let r = (|| {
        uri.take_size("mtu")?;
        uri.take_size("window")?;
        uri.take_duration("liveness")?;
        uri.take_duration("nak_delay")?;
        uri.take_u64("stream")?;
        uri.take_choice("gap", &["fail", "skip"])?;
        uri.take_str("key");
        uri.finish()
    })();
    if let Err(e) = r {
        let _ = e.to_string();
    }
}
