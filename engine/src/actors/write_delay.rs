//! An opt-in write delay ([`Limits::write_delay`](crate::Limits)): while events come to
//! a session faster than one per delay, its transport is told of them at most once per
//! delay, so one socket write carries what several commits pushed meanwhile.
//!
//! A socket write costs the kernel about the same whether it carries one event or ten, so
//! on a busy fan-out most of the server's CPU goes to writes, not to events. Without a
//! delay, a session with 8 sends in flight towards it gets one write per group commit;
//! with one, it gets about one write per delay. A session that was last woken longer ago
//! than the delay is woken at once, so a quiet conversation pays no latency for it. Acks
//! and command replies are never delayed: only pushed events wait, in order, and nothing
//! is dropped.
//!
//! One thread per node does the waiting, for every session: no timer per session, and
//! nothing at all while no events are waiting. It is a plain thread, not a task, so a
//! worker busy with socket writes does not hold the flush back past its deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::session::SessionSink;

/// A session's last wake-up before it had any.
pub(crate) const NEVER: u64 = 0;

/// The shared part: the sessions waiting for the flush, and the flushing thread's signal.
#[derive(Debug)]
pub(crate) struct WriteDelay {
    delay: Duration,
    /// Wake-up times are kept as microseconds since this instant, in an atomic per session.
    epoch: Instant,
    state: Mutex<Waiting>,
    /// Signalled when the first session starts waiting, and at shutdown.
    signal: Condvar,
}

#[derive(Debug, Default)]
struct Waiting {
    sessions: Vec<Arc<SessionSink>>,
    stopped: bool,
}

impl WriteDelay {
    /// Starts the flushing thread. It runs until [`WriteDelay::stop`].
    pub(crate) fn start(delay: Duration) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Self {
            delay,
            epoch: Instant::now(),
            state: Mutex::new(Waiting::default()),
            signal: Condvar::new(),
        });
        let flusher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("courier-write-delay".into())
            .spawn(move || flusher.run())?;
        Ok(shared)
    }

    /// `sink` has events and no wake-up on its way: it is woken now if its last wake-up
    /// is older than the delay, else at the next flush.
    pub(crate) fn wake_or_schedule(&self, sink: Arc<SessionSink>) {
        let now = self.now();
        let last = sink.last_wake.load(Ordering::Relaxed);
        if last == NEVER || now.saturating_sub(last) >= self.delay_micros() {
            self.wake(&sink, now);
            return;
        }
        let mut state = self.state.lock();
        if state.stopped {
            drop(state);
            self.wake(&sink, now);
            return;
        }
        state.sessions.push(sink);
        if state.sessions.len() == 1 {
            self.signal.notify_one();
        }
    }

    fn wake(&self, sink: &Arc<SessionSink>, now: u64) {
        sink.last_wake.store(now, Ordering::Relaxed);
        sink.wake();
    }

    /// Microseconds since `epoch`, never [`NEVER`].
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn delay_micros(&self) -> u64 {
        u64::try_from(self.delay.as_micros()).unwrap_or(u64::MAX)
    }

    /// Wakes every waiting session now (before sessions are closed, so their events go
    /// out first).
    pub(crate) fn flush(&self) {
        let sessions = std::mem::take(&mut self.state.lock().sessions);
        let now = self.now();
        for sink in sessions {
            self.wake(&sink, now);
        }
    }

    /// Flushes, stops the thread, and from now on wakes sessions at once.
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.signal.notify_one();
        self.flush();
    }

    fn run(&self) {
        // Swapped with the waiting list, so neither allocates once both have room.
        let mut due = Vec::new();
        loop {
            {
                let mut state = self.state.lock();
                while state.sessions.is_empty() && !state.stopped {
                    self.signal.wait(&mut state);
                }
                if state.stopped {
                    return;
                }
            }
            // Every session that starts waiting from now until the flush shares it.
            std::thread::sleep(self.delay);
            std::mem::swap(&mut due, &mut self.state.lock().sessions);
            let now = self.now();
            for sink in due.drain(..) {
                self.wake(&sink, now);
            }
        }
    }
}
