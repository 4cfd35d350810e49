//! What each connection saw, and the run's totals: latency, loss, duplicates, order.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch: sender and receivers share this machine's clock, so
/// a receiver's latency is its receive time minus the time written in the body.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// A message body of `size` bytes that starts with its send time: `t=<micros> xxx…`.
pub fn body(size: usize) -> String {
    let stamp = format!("t={} ", now_micros());
    let padding = size.saturating_sub(stamp.len()).max(1);
    stamp + &"x".repeat(padding)
}

/// The send time a body carries.
pub fn sent_at(body: &str) -> Option<u64> {
    body.strip_prefix("t=")?.split(' ').next()?.parse().ok()
}

/// The highest latency recorded, in microseconds (60 s); longer ones count as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// One connection's view of the conversations it receives.
pub struct Received {
    /// End-to-end latency of each delivery, in microseconds.
    pub latency: Histogram<u64>,
    /// Seqs seen, per conversation (index = seq).
    seen: HashMap<i64, Vec<bool>>,
    /// The highest seq seen, per conversation.
    highest: HashMap<i64, i64>,
    pub deliveries: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Default for Received {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            seen: HashMap::new(),
            highest: HashMap::new(),
            deliveries: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Received {
    /// Records one `message:received`.
    pub fn record(&mut self, conversation: i64, seq: i64, body: &str) {
        let Ok(index) = usize::try_from(seq) else {
            self.out_of_order += 1;
            return;
        };
        let seen = self.seen.entry(conversation).or_default();
        if seen.len() <= index {
            seen.resize(index + 1, false);
        }
        if seen[index] {
            self.duplicates += 1;
            return;
        }
        seen[index] = true;
        self.deliveries += 1;
        let highest = self.highest.entry(conversation).or_insert(0);
        if seq < *highest {
            self.out_of_order += 1;
        }
        *highest = (*highest).max(seq);
        if let Some(sent) = sent_at(body) {
            let latency = now_micros().saturating_sub(sent).clamp(1, MAX_LATENCY_US);
            let _ = self.latency.record(latency);
        }
    }

    /// Distinct deliveries of seqs at or below `up_to` in `conversation`.
    pub fn distinct_up_to(&self, conversation: i64, up_to: i64) -> u64 {
        let Some(seen) = self.seen.get(&conversation) else {
            return 0;
        };
        let end = usize::try_from(up_to.max(0))
            .unwrap_or(0)
            .min(seen.len().saturating_sub(1));
        seen.iter().take(end + 1).filter(|seen| **seen).count() as u64
    }
}

/// The run's totals over every connection.
pub struct Totals {
    pub latency: Histogram<u64>,
    pub deliveries: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Totals {
    pub fn new() -> Self {
        Self {
            latency: new_histogram(),
            deliveries: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }

    pub fn add(&mut self, received: &Received) {
        let _ = self.latency.add(&received.latency);
        self.deliveries += received.deliveries;
        self.duplicates += received.duplicates;
        self.out_of_order += received.out_of_order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_their_send_time_and_size() {
        let body = body(100);
        assert_eq!(body.len(), 100);
        assert!(sent_at(&body).is_some_and(|sent| sent <= now_micros()));
    }

    #[test]
    fn duplicates_and_reordering_are_counted() {
        let mut received = Received::default();
        for seq in [1, 2, 4, 3, 3] {
            received.record(7, seq, "t=1 x");
        }
        assert_eq!(received.deliveries, 4);
        assert_eq!(received.duplicates, 1);
        assert_eq!(received.out_of_order, 1);
        assert_eq!(received.distinct_up_to(7, 4), 4);
        assert_eq!(received.distinct_up_to(7, 2), 2);
        assert_eq!(received.distinct_up_to(8, 2), 0);
    }
}
