//! One clock for every socket's pings and token expiry.
//!
//! A timer per socket (an actix `run_interval` for the ping and a `run_later` for the
//! token) costs each idle connection two timer entries and their futures, and every
//! wake-up of the socket's actor polls them again, once per delivered event. Instead,
//! one task walks a table of deadlines once a second and tells a socket only when its
//! ping or its token is due. A socket costs one table row; the walk costs a few
//! nanoseconds per socket per second.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::{Message, Recipient};
use parking_lot::Mutex;
use slab::Slab;

/// How often the table is walked: the precision of pings and of token expiry.
const RESOLUTION: Duration = Duration::from_secs(1);

/// What a socket is told when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum Beat {
    /// Ping the client (and give up on it if it has been silent too long).
    Ping,
    /// The access token the socket was opened with has expired: close it.
    TokenExpired,
}

/// A socket's row in [`Heartbeats`]; give it back with [`Heartbeats::leave`].
#[derive(Debug)]
pub struct HeartbeatKey(usize);

/// The table of every socket's next ping and token expiry on this node.
#[derive(Default)]
pub struct Heartbeats {
    sockets: Mutex<Slab<Deadlines>>,
}

struct Deadlines {
    socket: Recipient<Beat>,
    ping_every: Duration,
    next_ping: Instant,
    token_expires: Option<Instant>,
}

impl Deadlines {
    /// The beat due at `now`, if any, and the deadlines moved past it.
    fn due(&mut self, now: Instant) -> Option<Beat> {
        if self.token_expires.is_some_and(|expires| expires <= now) {
            // Told once: the socket closes, and leaves the table when it stops.
            self.token_expires = None;
            return Some(Beat::TokenExpired);
        }
        if self.next_ping <= now {
            self.next_ping = now + self.ping_every;
            return Some(Beat::Ping);
        }
        None
    }
}

impl Heartbeats {
    /// An empty table; [`Heartbeats::run`] drives it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Walks the table every [`RESOLUTION`] until the table is dropped.
    pub async fn run(table: Weak<Self>) {
        let mut every = actix_web::rt::time::interval(RESOLUTION);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = Vec::new();
        loop {
            every.tick().await;
            let Some(table) = table.upgrade() else { return };
            table.collect_due(Instant::now(), &mut due);
            drop(table);
            // Sent with the lock released: sockets joining or leaving do not wait on it.
            for (socket, beat) in due.drain(..) {
                socket.do_send(beat);
            }
        }
    }

    fn collect_due(&self, now: Instant, due: &mut Vec<(Recipient<Beat>, Beat)>) {
        for (_, deadlines) in self.sockets.lock().iter_mut() {
            if let Some(beat) = deadlines.due(now) {
                due.push((deadlines.socket.clone(), beat));
            }
        }
    }

    /// Adds a socket, first pinged `ping_every` from now.
    pub fn join(&self, socket: Recipient<Beat>, ping_every: Duration) -> HeartbeatKey {
        HeartbeatKey(self.sockets.lock().insert(Deadlines {
            socket,
            ping_every,
            next_ping: Instant::now() + ping_every,
            token_expires: None,
        }))
    }

    /// The socket is to be told [`Beat::TokenExpired`] once `expires_at` (seconds since
    /// the epoch) has passed.
    pub fn expire_at(&self, key: &HeartbeatKey, expires_at: i64) {
        let now = courier_engine::Timestamp::now().as_millis() / 1000;
        let remaining = Duration::from_secs(u64::try_from(expires_at - now).unwrap_or(0));
        if let Some(deadlines) = self.sockets.lock().get_mut(key.0) {
            deadlines.token_expires = Some(Instant::now() + remaining);
        }
    }

    /// Removes a socket that stopped.
    pub fn leave(&self, key: HeartbeatKey) {
        self.sockets.lock().try_remove(key.0);
    }

    /// Sockets in the table (for tests and metrics).
    pub fn len(&self) -> usize {
        self.sockets.lock().len()
    }

    /// No socket is in the table.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::prelude::*;

    struct Listener(Vec<Beat>);

    impl Actor for Listener {
        type Context = Context<Self>;
    }

    impl Handler<Beat> for Listener {
        type Result = ();
        fn handle(&mut self, beat: Beat, _: &mut Self::Context) {
            self.0.push(beat);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<Beat>")]
    struct Heard;

    impl Handler<Heard> for Listener {
        type Result = MessageResult<Heard>;
        fn handle(&mut self, _: Heard, _: &mut Self::Context) -> Self::Result {
            MessageResult(self.0.clone())
        }
    }

    #[actix_rt::test]
    async fn sockets_hear_their_pings_and_their_token_expiry_once() {
        let table = Heartbeats::new();
        let listener = Listener(Vec::new()).start();
        let key = table.join(listener.clone().recipient(), Duration::from_secs(25));
        let now = Instant::now();
        let mut due = Vec::new();
        table.collect_due(now, &mut due);
        assert!(due.is_empty(), "nothing is due before the first interval");

        table.collect_due(now + Duration::from_secs(26), &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, Beat::Ping);
        due.clear();
        table.collect_due(now + Duration::from_secs(30), &mut due);
        assert!(
            due.is_empty(),
            "the next ping is an interval after the last"
        );

        let expires_at = courier_engine::Timestamp::now().as_millis() / 1000 + 60;
        table.expire_at(&key, expires_at);
        table.collect_due(now + Duration::from_secs(45), &mut due);
        assert!(due.is_empty());
        table.collect_due(now + Duration::from_secs(62), &mut due);
        table.collect_due(now + Duration::from_secs(63), &mut due);
        let beats: Vec<Beat> = due.iter().map(|(_, beat)| *beat).collect();
        assert_eq!(beats, [Beat::TokenExpired, Beat::Ping], "expiry told once");

        for (socket, beat) in due.drain(..) {
            socket.do_send(beat);
        }
        assert_eq!(
            listener.send(Heard).await.expect("listener alive"),
            [Beat::TokenExpired, Beat::Ping]
        );

        table.leave(key);
        assert!(table.is_empty());
        table.collect_due(now + Duration::from_secs(200), &mut due);
        assert!(due.is_empty(), "a socket that left hears nothing");
    }
}
