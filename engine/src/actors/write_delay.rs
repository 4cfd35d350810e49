//! The write delay ([`Limits::write_delay`](crate::Limits), 20 ms by default): a
//! session's transport is told of new events up to that long after the first of them, so
//! one socket write carries what several commits pushed meanwhile.
//!
//! Only events for a large audience wait
//! ([`Limits::write_delay_min_audience`](crate::Limits), 100 users by default): there a
//! write per commit is multiplied by every member, while a small conversation's events
//! are few and its members would notice the delay more than the server does the writes.
//! An event that does not wait wakes its session at once, and takes along whatever
//! waits there.
//!
//! A socket write costs the kernel about the same whether it carries one event or ten, so
//! on a busy fan-out most of the server's CPU goes to writes, not to events. Without a
//! delay, a session with 8 sends in flight towards it gets one write per group commit;
//! with one, it gets at most one write per delay. Acks and command replies are never
//! delayed: only pushed events wait, in order, and nothing is dropped.
//!
//! One thread per node does the waiting, for every session: no timer per session, and
//! nothing at all while no events are waiting. It is a plain thread, not a task, so a
//! worker busy with socket writes does not hold the flush back past its deadline.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::session::SessionSink;

/// The shared part: the sessions waiting for the flush, and the flushing thread's signal.
#[derive(Debug)]
pub(crate) struct WriteDelay {
    delay: Duration,
    /// The fewest users an event is for that makes it wait.
    min_audience: usize,
    state: Mutex<Waiting>,
    /// Signalled when the first session starts waiting, and at shutdown.
    signal: Condvar,
    /// The sessions of the flush under way, held while they are woken: a flush for a
    /// shutdown waits for it, so no session's close overtakes its events. Swapped with
    /// the waiting list, so neither allocates once both have room.
    waking: Mutex<Vec<Arc<SessionSink>>>,
}

#[derive(Debug, Default)]
struct Waiting {
    sessions: Vec<Arc<SessionSink>>,
    stopped: bool,
}

impl WriteDelay {
    /// Starts the flushing thread. It runs until [`WriteDelay::stop`].
    pub(crate) fn start(delay: Duration, min_audience: usize) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Self {
            delay,
            min_audience,
            state: Mutex::new(Waiting::default()),
            signal: Condvar::new(),
            waking: Mutex::new(Vec::new()),
        });
        let flusher = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("courier-write-delay".into())
            .spawn(move || flusher.run())?;
        Ok(shared)
    }

    /// Whether an event for `audience` users waits for the flush.
    pub(crate) fn applies_to(&self, audience: usize) -> bool {
        audience >= self.min_audience
    }

    /// `sink` has events and no wake-up on its way: it gets one at the next flush.
    pub(crate) fn schedule(&self, sink: Arc<SessionSink>) {
        let mut state = self.state.lock();
        if state.stopped {
            drop(state);
            sink.wake();
            return;
        }
        state.sessions.push(sink);
        if state.sessions.len() == 1 {
            self.signal.notify_one();
        }
    }

    /// Wakes every waiting session now, once a flush under way has woken its own (before
    /// sessions are closed, so their events go out first).
    pub(crate) fn flush(&self) {
        let mut waking = self.waking.lock();
        std::mem::swap(&mut *waking, &mut self.state.lock().sessions);
        for sink in waking.drain(..) {
            sink.wake();
        }
    }

    /// Flushes, stops the thread, and from now on wakes sessions at once.
    pub(crate) fn stop(&self) {
        self.state.lock().stopped = true;
        self.signal.notify_one();
        self.flush();
    }

    fn run(&self) {
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
            self.flush();
        }
    }
}
