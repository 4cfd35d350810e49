//! The JSON line `loadgen` prints on stdout for each run, one type for its writer and its
//! readers so that the two cannot drift apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One run's results. Rates are per second of load; latencies are end to end, from the
/// send time written in a message's body to its delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    /// The server loaded, when a script tagged the line (benches/compare/run.sh:
    /// `courier-sqlite`, `courier-postgres` or `reference`); `loadgen` itself leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The scenario, as named on the command line (`fanout`, `pairs`, `idle`, ...).
    pub scenario: String,
    /// `native` or `socketio`.
    pub protocol: String,
    /// Client connections in the run, senders and receivers.
    pub connections: u64,
    /// Bytes per message body.
    pub payload_bytes: u64,
    /// Unacked sends each sender keeps in flight.
    pub window: u64,
    /// Seconds of load.
    pub seconds: f64,
    /// Seconds it took to open every connection.
    pub connect_seconds: f64,
    /// Messages sent.
    pub sent: u64,
    /// Sends the server acknowledged.
    pub acked: u64,
    /// Sends the server refused (answered with an error).
    pub refused: u64,
    /// Acknowledged sends per second.
    pub acked_per_second: f64,
    /// Distinct messages received, over all receivers.
    pub delivered: u64,
    /// Deliveries per second.
    pub delivered_per_second: f64,
    /// Delivery latency percentiles, in microseconds.
    pub latency_us: Latency,
    /// Acknowledged messages that a member never received.
    pub lost: u64,
    /// Messages a member received more than once.
    pub duplicated: u64,
    /// Messages a member received after a later one of the same conversation.
    pub out_of_order: u64,
    /// Connections that failed while the run went on.
    pub connection_errors: u64,
    /// Connections the churn scenario opened.
    pub churn_connections: u64,
    /// Server CPU time (user and system) during the load, when its pid was given.
    pub server_cpu_seconds: Option<f64>,
    /// Server CPU time per delivery, in microseconds.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server resident memory at the end of the load, in KiB.
    #[serde(rename = "serverRssKiB")]
    pub server_rss_kib: Option<u64>,
    /// What the server's resident memory grew by from before the connections opened to the
    /// end of the load, per connection, in KiB.
    #[serde(rename = "serverRssKiBPerConnection")]
    pub server_rss_kib_per_connection: Option<f64>,
    /// Refusal codes and connection errors, counted by kind.
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
}

/// Latency percentiles in microseconds; absent when nothing was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Latency {
    /// The median.
    pub p50: Option<u64>,
    /// The 90th percentile.
    pub p90: Option<u64>,
    /// The 99th percentile.
    pub p99: Option<u64>,
    /// The highest.
    pub max: Option<u64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A line as `loadgen` printed it before this type existed, with a target tag.
    const LINE: &str = r#"{"target":"reference","acked":10,"ackedPerSecond":5.0,"churnConnections":0,"connectSeconds":0.1,"connectionErrors":0,"connections":11,"delivered":110,"deliveredPerSecond":55.0,"duplicated":0,"latencyUs":{"max":900,"p50":100,"p90":300,"p99":800},"lost":0,"outOfOrder":2,"payloadBytes":100,"protocol":"socketio","refusals":{},"refused":0,"scenario":"fanout","seconds":2.0,"sent":10,"serverCpuSeconds":0.5,"serverCpuUsPerDelivery":4545.4,"serverRssKiB":60000,"serverRssKiBPerConnection":null,"window":8}"#;

    #[test]
    fn reads_and_writes_the_same_line() {
        let report: RunReport = serde_json::from_str(LINE).unwrap();
        assert_eq!(report.target.as_deref(), Some("reference"));
        assert_eq!(report.connections, 11);
        assert_eq!(report.latency_us.p99, Some(800));
        assert_eq!(report.server_rss_kib, Some(60_000));
        assert_eq!(report.server_rss_kib_per_connection, None);
        let written: serde_json::Value = serde_json::to_value(&report).unwrap();
        let read: serde_json::Value = serde_json::from_str(LINE).unwrap();
        assert_eq!(written, read);
    }

    #[test]
    fn loadgen_leaves_the_target_out() {
        let mut report: RunReport = serde_json::from_str(LINE).unwrap();
        report.target = None;
        let written = serde_json::to_value(&report).unwrap();
        assert!(written.get("target").is_none());
        assert!(written["serverRssKiBPerConnection"].is_null());
    }
}
