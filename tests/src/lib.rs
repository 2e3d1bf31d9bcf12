//! Helpers shared by the system tests and their helper binaries: those of
//! the whole workspace (`conduit-test-util`), re-exported.

pub use conduit_test_util::*;

/// The `counters LABEL ...` line the node binaries print at the end and
/// the tests read back by field name (`name=value`): `extra` (fields of the
/// binary's own, each followed by a space), then the handle's transfer,
/// repair and drop counters, then the drops by reason in brackets.
///
/// ```
/// let line = conduit_system_tests::counters_line("pub", &conduit::Counters::default(), "");
/// assert!(line.starts_with("counters pub sent=0 "));
/// ```
pub fn counters_line(label: &str, c: &conduit::Counters, extra: &str) -> String {
    let drops: Vec<String> = c
        .drops_by_reason
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    format!(
        "counters {label} {extra}sent={} received={} retransmitted={} naks_sent={} naks_received={} dropped={} datagrams_sent={} datagrams_received={} [{}]",
        c.sent,
        c.received,
        c.retransmitted,
        c.naks_sent,
        c.naks_received,
        c.dropped,
        c.datagrams_sent,
        c.datagrams_received,
        drops.join(" ")
    )
}
