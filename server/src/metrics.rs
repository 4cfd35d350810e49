//! Prometheus metrics, served as text at `/api/v1/metrics`.

use std::sync::{Arc, OnceLock};

use courier_engine::bus::{RedisBus, RedisBusStats};
use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Attached sessions by transport.
    pub sessions: IntGaugeVec,
    /// Messages accepted (acked as stored), all transports.
    pub messages_sent: IntCounter,
    /// Events written to sockets (a message to N sessions counts N).
    pub events_delivered: IntCounter,
    /// Seconds from receiving a send to answering it (stored durably).
    pub send_to_ack_seconds: Histogram,
    /// Requests refused by a rate limit, by scope (auth, send, frame).
    pub rate_limited: IntCounterVec,
    /// HTTP responses by status class.
    pub http_responses: IntCounterVec,
    /// Seconds a group commit spent in the store.
    pub store_commit_seconds: Histogram,
    /// Sends per group commit.
    pub commit_batch_size: Histogram,
    /// Conversations per group commit.
    pub commit_conversations: Histogram,
    /// Group commits that failed.
    pub commit_failures: IntCounter,
    /// 1 while events reach the other nodes (always, with the in-process bus).
    bus_up: IntGauge,
    /// The Redis bus's counters, by kind (published, dropped, received, gap_fills,
    /// nodes_reaped, resyncs).
    bus_events: IntCounterVec,
    redis_bus: Arc<OnceLock<Arc<RedisBus>>>,
    bus_seen: Mutex<RedisBusStats>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(redis_bus: Arc<OnceLock<Arc<RedisBus>>>) -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("courier".into()), None)?;
        let connections = IntGauge::new("websocket_connections", "Open WebSocket connections")?;
        let sessions = IntGaugeVec::new(
            Opts::new("sessions", "Attached sessions by transport"),
            &["transport"],
        )?;
        let messages_sent = IntCounter::new("messages_sent_total", "Messages stored and acked")?;
        let events_delivered = IntCounter::new(
            "events_delivered_total",
            "Events written to sockets; a message to N sessions counts N",
        )?;
        let send_to_ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "send_to_ack_seconds",
                "From receiving a send to acking it after the durable commit",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused by a rate limit"),
            &["scope"],
        )?;
        let http_responses = IntCounterVec::new(
            Opts::new("http_responses_total", "HTTP responses by status class"),
            &["class"],
        )?;
        let store_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "store_commit_seconds",
                "Seconds a group commit spent in the store",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new("commit_batch_size", "Sends written by one group commit")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let commit_conversations = Histogram::with_opts(
            HistogramOpts::new(
                "commit_conversations",
                "Conversations whose sends one group commit wrote",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )?;
        let commit_failures =
            IntCounter::new("commit_failures_total", "Group commits that failed")?;
        let bus_up = IntGauge::new(
            "bus_up",
            "1 while events reach the other nodes; 0 while Redis is unreachable",
        )?;
        let bus_events = IntCounterVec::new(
            Opts::new(
                "bus_events_total",
                "Redis bus envelopes: published, dropped (Redis unreachable), received, \
                 gap_fills (seqs read from the store), nodes_reaped (dead nodes taken offline), \
                 resyncs (member lists and subscriptions reloaded: after subscribing, and after a lost \
                 control note)",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(bus_up.clone()))?;
        registry.register(Box::new(bus_events.clone()))?;
        registry.register(Box::new(store_commit_seconds.clone()))?;
        registry.register(Box::new(commit_batch_size.clone()))?;
        registry.register(Box::new(commit_conversations.clone()))?;
        registry.register(Box::new(commit_failures.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(messages_sent.clone()))?;
        registry.register(Box::new(events_delivered.clone()))?;
        registry.register(Box::new(send_to_ack_seconds.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(http_responses.clone()))?;
        Ok(Self {
            registry,
            connections,
            sessions,
            messages_sent,
            events_delivered,
            send_to_ack_seconds,
            rate_limited,
            http_responses,
            store_commit_seconds,
            commit_batch_size,
            commit_conversations,
            commit_failures,
            bus_up,
            bus_events,
            redis_bus,
            bus_seen: Mutex::new(RedisBusStats::default()),
        })
    }

    /// The Prometheus text exposition; `bus_healthy` is the bus's state now.
    pub fn render(&self, bus_healthy: bool) -> String {
        self.bus_up.set(i64::from(bus_healthy));
        if let Some(bus) = self.redis_bus.get() {
            let now = bus.stats();
            let mut seen = self.bus_seen.lock();
            for (kind, now, before) in [
                ("published", now.published, seen.published),
                ("dropped", now.dropped, seen.dropped),
                ("received", now.received, seen.received),
                ("gap_fills", now.gap_fills, seen.gap_fills),
                ("nodes_reaped", now.nodes_reaped, seen.nodes_reaped),
                ("resyncs", now.resyncs, seen.resyncs),
            ] {
                self.bus_events
                    .with_label_values(&[kind])
                    .inc_by(now.saturating_sub(before));
            }
            *seen = now;
        }
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics failed to encode");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl courier_engine::EngineObserver for Metrics {
    fn commit_finished(
        &self,
        conversations: usize,
        sends: usize,
        elapsed: std::time::Duration,
        committed: bool,
    ) {
        self.store_commit_seconds.observe(elapsed.as_secs_f64());
        self.commit_batch_size.observe(sends as f64);
        self.commit_conversations.observe(conversations as f64);
        if !committed {
            self.commit_failures.inc();
        }
    }
}
