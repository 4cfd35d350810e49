//! What the engine holds of one attached session: where to push, and how full its queue is.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use actix::Recipient;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, RwLock};

use super::write_delay::WriteDelay;
use crate::ids::{ConversationId, SessionId, UserId};
use crate::protocol::EventFrame;

/// What the engine tells a session's transport, through its [`OutboundStream`].
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Events wait for the client: take them with [`PendingEvents::drain`], and once they
    /// are written, say so with [`OutboundQueue::written`].
    ///
    /// One item stands for every event pushed until the transport takes them: under load
    /// a transport takes many events per item. An item may find nothing left to take.
    Events(PendingEvents),
    /// The engine gave up on this session: close the connection with this reason. Events
    /// pushed before it come first.
    Close(CloseReason),
}

/// Why the engine closed a session. Transports map it to their close frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client did not read fast enough and a chat message would have overflowed its
    /// queue. Nothing is lost: the client reconnects and catches up with `sync`.
    SlowConsumer,
    /// The engine is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The WebSocket close code: 4008 for a slow consumer (application range, "policy"),
    /// 1001 "going away" for shutdown.
    pub fn close_code(self) -> u16 {
        match self {
            Self::SlowConsumer => 4008,
            Self::Shutdown => 1001,
        }
    }

    /// A short machine-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::Shutdown => "shutdown",
        }
    }

    const ALL: [Self; 2] = [Self::SlowConsumer, Self::Shutdown];

    /// Its bit in [`Signal::state`].
    fn bits(self) -> u8 {
        match self {
            Self::SlowConsumer => Signal::SLOW_CONSUMER,
            Self::Shutdown => Signal::SHUTDOWN,
        }
    }
}

/// How the engine tells a session's transport that something waits: the news in one
/// atomic byte, and the waker of the task that reads the [`OutboundStream`].
///
/// Written by hand, not an actix mailbox message per wake-up: `do_send` allocates an
/// envelope and a queue node per message, and on the fan-out path that was a quarter of
/// the instructions per recipient. A flag and a waker allocate nothing, and wake-ups
/// that come before the transport runs merge into one. The news shares one byte so the
/// reader takes all of it in one step: a close can never be seen without the events
/// flagged before it.
#[derive(Debug, Default)]
struct Signal {
    waker: AtomicWaker,
    /// [`Self::EVENTS`], at most one close reason, [`Self::ENDED`].
    state: AtomicU8,
}

impl Signal {
    /// Events wait to be taken.
    const EVENTS: u8 = 1;
    const SLOW_CONSUMER: u8 = 1 << 1;
    const SHUTDOWN: u8 = 1 << 2;
    const CLOSE: u8 = Self::SLOW_CONSUMER | Self::SHUTDOWN;
    /// The engine's [`Session`](crate::Session) handle was dropped: the stream ends.
    const ENDED: u8 = 1 << 3;

    fn events(&self) {
        if self.state.fetch_or(Self::EVENTS, Ordering::AcqRel) & Self::EVENTS == 0 {
            self.waker.wake();
        }
    }

    /// The first reason stays.
    fn close(&self, reason: CloseReason) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state & Self::CLOSE == 0).then_some(state | reason.bits())
            });
        self.waker.wake();
    }

    fn end(&self) {
        self.state.fetch_or(Self::ENDED, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Everything there is to hear, with the events flag cleared.
    fn take(&self) -> u8 {
        self.state.fetch_and(!Self::EVENTS, Ordering::AcqRel)
    }
}

/// What the engine has for one session's transport: [`Outbound::Events`] whenever events
/// wait, then at most one [`Outbound::Close`], after the events pushed before it. Nothing
/// comes after the close. The stream ends when the session's
/// [`Session`](crate::Session) handle is dropped, so an actor that reads it stops then
/// (actix's default `StreamHandler::finished`).
///
/// An actix transport adds it to its actor's context (`ctx.add_stream(outbound)`) and
/// handles it as a `StreamHandler<Outbound>`; any other task can poll it as a
/// [`Stream`]. One task reads it; dropping it lets go of that task's waker.
#[derive(Debug)]
pub struct OutboundStream {
    sink: Arc<SessionSink>,
    close_told: bool,
    ended: bool,
}

impl OutboundStream {
    pub(crate) fn new(sink: Arc<SessionSink>) -> Self {
        Self {
            sink,
            close_told: false,
            ended: false,
        }
    }
}

impl Stream for OutboundStream {
    type Item = Outbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let signal = &self.sink.signal;
        // What this stream still has to say; a close already told stays set in `state`.
        let news = if self.close_told {
            Signal::ENDED
        } else {
            Signal::EVENTS | Signal::CLOSE | Signal::ENDED
        };
        let mut state = signal.take();
        if state & news == 0 {
            // Registered before the news is read again, so a wake-up in between is not
            // lost; a poll that finds news at once skips registering (half of all polls).
            signal.waker.register(cx.waker());
            state = signal.take();
        }
        if self.close_told {
            // Nothing after the close but the end.
        } else if state & Signal::EVENTS != 0 {
            let pending = PendingEvents(Arc::clone(&self.sink));
            return Poll::Ready(Some(Outbound::Events(pending)));
        } else if let Some(reason) = CloseReason::ALL
            .into_iter()
            .find(|reason| state & reason.bits() != 0)
        {
            self.close_told = true;
            return Poll::Ready(Some(Outbound::Close(reason)));
        }
        if state & Signal::ENDED != 0 {
            self.ended = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for OutboundStream {
    fn drop(&mut self) {
        drop(self.sink.signal.waker.take());
    }
}

/// The events pushed to a session that its transport has not taken yet, and the count of
/// those not yet written.
///
/// The engine increments the count for every event it pushes; the transport decrements it
/// with [`OutboundQueue::written`] once events are on their way to the client: what the
/// transport has buffered and not sent counts too, and back-pressure looks at that count.
#[derive(Debug)]
pub struct OutboundQueue {
    /// Pushed and not taken, oldest first, and whether the transport was told of them.
    untaken: Mutex<Untaken>,
    /// What the transport is draining: swapped with `untaken`, so neither side allocates
    /// once both have room, and pushes wait only for the swap.
    draining: Mutex<Vec<EventFrame>>,
    pending: AtomicUsize,
    capacity: usize,
    overflowed: AtomicBool,
    dropped_ephemeral: AtomicUsize,
}

impl OutboundQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            untaken: Mutex::new(Untaken::default()),
            draining: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            capacity: capacity.max(4),
            overflowed: AtomicBool::new(false),
            dropped_ephemeral: AtomicUsize::new(0),
        }
    }

    /// The transport wrote `count` events.
    pub fn written(&self, count: usize) {
        // Saturating: a transport that reports more writes than pushes must not wrap.
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(count))
            });
    }

    /// Appends an event that may wait for the write delay or not, and says how the
    /// transport is to be told of it: not at all when a wake-up that soon is on its way.
    fn append(&self, frame: &EventFrame, may_wait: bool) -> Option<Wake> {
        let mut untaken = self.untaken.lock();
        untaken.frames.push(frame.clone());
        let wake = match (untaken.told, may_wait) {
            (Some(Wake::Now), _) | (Some(Wake::Later), true) => return None,
            (_, false) => Wake::Now,
            (None, true) => Wake::Later,
        };
        untaken.told = Some(wake);
        Some(wake)
    }

    /// Frames pushed and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Typing and presence events dropped because the queue was nearly full.
    pub fn dropped_ephemeral(&self) -> usize {
        self.dropped_ephemeral.load(Ordering::Relaxed)
    }

    /// The session was closed as a slow consumer.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }
}

/// The events pushed and not taken yet.
#[derive(Debug, Default)]
struct Untaken {
    /// Oldest first. Empty, it holds no allocation.
    frames: Vec<EventFrame>,
    /// The wake-up on its way for them, if any. An event that may not wait gets a
    /// wake-up of its own when the one on its way waits for the write delay.
    told: Option<Wake>,
}

/// When a session's transport is told that events wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Now,
    /// At the write delay's next flush.
    Later,
}

/// Room kept for events between bursts, per buffer of a session (two buffers).
const RETAINED_CAPACITY: usize = 32;

/// The events waiting for one session, handed to its transport in [`Outbound::Events`].
#[derive(Debug, Clone)]
pub struct PendingEvents(Arc<SessionSink>);

impl PendingEvents {
    /// Hands `write` every event pushed and not taken yet, oldest first, and returns how
    /// many (none when an earlier call took them already). Report them with
    /// [`OutboundQueue::written`] once they are on their way.
    pub fn drain(&self, mut write: impl FnMut(EventFrame)) -> usize {
        let sink = &self.0;
        let queue = &sink.queue;
        let mut draining = queue.draining.lock();
        {
            let mut untaken = queue.untaken.lock();
            std::mem::swap(&mut *draining, &mut untaken.frames);
            untaken.told = None;
        }
        let mut count = 0;
        let mut dropped = 0;
        // Looked up per event only while the session has left a room.
        let some_room_left = sink.has_left_rooms.load(Ordering::Acquire);
        for frame in draining.drain(..) {
            // A room left while its events waited: they are not written after the reply.
            if some_room_left && sink.in_left_room(&frame) {
                dropped += 1;
            } else {
                count += 1;
                write(frame);
            }
        }
        if dropped > 0 {
            queue.written(dropped);
        }
        // A burst that found the client slow leaves no large buffer behind.
        draining.shrink_to(RETAINED_CAPACITY);
        count
    }

    /// The session's queue, to report what was written.
    pub fn queue(&self) -> &OutboundQueue {
        &self.0.queue
    }
}

/// One session as the fan-out path sees it.
#[derive(Debug)]
pub(crate) struct SessionSink {
    pub(crate) id: SessionId,
    pub(crate) user: UserId,
    /// How its transport hears of events and of a close.
    signal: Signal,
    /// Where the wake-up waits when the engine delays writes; `None` wakes at once.
    write_delay: Option<Arc<WriteDelay>>,
    /// Inline, not behind its own `Arc`: one pointer less to chase per delivery.
    pub(crate) queue: OutboundQueue,
    /// Conversations this session left with `room:leave`; checked only when non-empty.
    left_rooms: RwLock<HashSet<ConversationId>>,
    has_left_rooms: AtomicBool,
    /// The user's actor, told when the session overflows: a transport that stopped
    /// reading may never handle the close, so the engine lets go of the session itself.
    owner: std::sync::OnceLock<Recipient<super::user::DetachSession>>,
}

impl SessionSink {
    pub(crate) fn set_owner(&self, owner: Recipient<super::user::DetachSession>) {
        let _ = self.owner.set(owner);
    }

    pub(crate) fn new(
        id: SessionId,
        user: UserId,
        capacity: usize,
        write_delay: Option<Arc<WriteDelay>>,
    ) -> Self {
        Self {
            id,
            user,
            signal: Signal::default(),
            write_delay,
            queue: OutboundQueue::new(capacity),
            left_rooms: RwLock::new(HashSet::new()),
            has_left_rooms: AtomicBool::new(false),
            owner: std::sync::OnceLock::new(),
        }
    }

    /// Pushes an event meant for `audience` users in all, applying the slow-consumer
    /// policy: ephemeral events are dropped once the queue is three quarters full; a
    /// reliable event that would overflow it closes the session instead of being dropped
    /// silently. The write delay, if any, holds the wake-up back when the audience is
    /// large enough for it.
    pub(crate) fn push(self: &Arc<Self>, frame: &EventFrame, audience: usize) {
        let queue = &self.queue;
        if queue.overflowed.load(Ordering::Acquire) {
            return;
        }
        if self.in_left_room(frame) {
            return;
        }
        let pending = queue.pending.fetch_add(1, Ordering::AcqRel) + 1;
        if frame.is_ephemeral() && pending > queue.capacity / 4 * 3 {
            queue.written(1);
            queue.dropped_ephemeral.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if pending > queue.capacity {
            queue.written(1);
            if !queue.overflowed.swap(true, Ordering::AcqRel) {
                tracing::warn!(session = %self.id, user = %self.user, "closing slow consumer");
                self.signal.close(CloseReason::SlowConsumer);
                if let Some(owner) = self.owner.get() {
                    owner.do_send(super::user::DetachSession { id: self.id });
                }
            }
            return;
        }
        let delay = self
            .write_delay
            .as_ref()
            .filter(|delay| delay.applies_to(audience));
        match (queue.append(frame, delay.is_some()), delay) {
            (Some(Wake::Later), Some(delay)) => delay.schedule(Arc::clone(self)),
            (Some(_), _) => self.wake(),
            (None, _) => {}
        }
    }

    /// Whether `frame` belongs to a room this session left.
    fn in_left_room(&self, frame: &EventFrame) -> bool {
        self.has_left_rooms.load(Ordering::Acquire)
            && frame
                .conversation_id()
                .is_some_and(|conversation| self.left_rooms.read().contains(&conversation))
    }

    /// Tells the transport that events wait.
    pub(crate) fn wake(&self) {
        self.signal.events();
    }

    /// Ends the session's [`OutboundStream`]: its handle is gone.
    pub(crate) fn end_stream(&self) {
        self.signal.end();
    }

    pub(crate) fn close(&self, reason: CloseReason) {
        // Events waiting for the write delay go out before the close. Checked under the
        // queue's lock, so an event pushed just before cannot be scheduled after it.
        let waiting = {
            let mut untaken = self.queue.untaken.lock();
            let waiting = untaken.told == Some(Wake::Later);
            if waiting {
                untaken.told = Some(Wake::Now);
            }
            waiting
        };
        if waiting {
            self.wake();
        }
        self.signal.close(reason);
    }

    pub(crate) fn set_room_left(&self, conversation: ConversationId, left: bool) {
        let mut rooms = self.left_rooms.write();
        if left {
            rooms.insert(conversation);
        } else {
            rooms.remove(&conversation);
        }
        self.has_left_rooms
            .store(!rooms.is_empty(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt as _;

    use super::*;
    use crate::protocol::{ServerEvent, TypingChanged};

    fn typing() -> EventFrame {
        ServerEvent::TypingStarted(TypingChanged {
            conversation_id: ConversationId(1),
            user_id: UserId(1),
        })
        .encode()
    }

    /// Polls the stream without pause until the close, as a busy transport would, and
    /// returns how many events it took before it.
    fn spin_until_close(outbound: &mut OutboundStream) -> usize {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut taken = 0;
        loop {
            match outbound.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(Outbound::Events(pending))) => taken += pending.drain(drop),
                Poll::Ready(Some(Outbound::Close(_))) => return taken,
                Poll::Ready(None) => panic!("the stream ended before the close"),
                Poll::Pending => spin(),
            }
        }
    }

    /// Waits a moment without sleeping, and lets the other thread run now and then, in
    /// case both share one core.
    fn spin() {
        thread_local!(static SPINS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        let spins = SPINS.with(|spins| {
            spins.set(spins.get().wrapping_add(1));
            spins.get()
        });
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }

    /// An event pushed and a close set on another thread while the transport polls: the
    /// close never comes before the event. Both threads spin, so they start each round
    /// together; the bad order needs the whole push and close to land between two reads
    /// of the poll, so it is rare, and there are many rounds.
    #[test]
    fn a_close_never_overtakes_the_events_pushed_before_it() {
        const ROUNDS: usize = 300_000;
        let frame = typing();
        let next = Arc::new(Mutex::new(None::<Arc<SessionSink>>));
        let started = Arc::new(AtomicUsize::new(0));
        let engine = {
            let (next, started) = (Arc::clone(&next), Arc::clone(&started));
            std::thread::spawn(move || {
                for round in 1..=ROUNDS {
                    while started.load(Ordering::Acquire) != round {
                        spin();
                    }
                    let Some(sink) = next.lock().take() else {
                        panic!("round {round} has no session");
                    };
                    sink.push(&frame, 1);
                    sink.close(CloseReason::Shutdown);
                }
            })
        };
        for round in 1..=ROUNDS {
            let sink = Arc::new(SessionSink::new(SessionId(1), UserId(1), 1024, None));
            let mut outbound = OutboundStream::new(Arc::clone(&sink));
            *next.lock() = Some(sink);
            started.store(round, Ordering::Release);
            let taken = spin_until_close(&mut outbound);
            assert_eq!(taken, 1, "round {round}: the close came before the event");
        }
        engine.join().unwrap();
    }

    /// A transport that waits for its wake-ups, as every real one does, while another
    /// thread pushes each event just as the reader finishes the one before: it hears of
    /// every event. A wake-up lost between the reader's look and its waiting would leave
    /// it asleep with an event queued, and the read would time out.
    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_reader_is_woken_for_every_event() {
        const EVENTS: usize = 100_000;
        let frame = typing();
        let sink = Arc::new(SessionSink::new(SessionId(1), UserId(1), 1024, None));
        let mut outbound = OutboundStream::new(Arc::clone(&sink));
        let engine = std::thread::spawn(move || {
            for pushed in 0..EVENTS {
                // The reader has written the last event and is about to look again.
                while sink.queue.pending() != 0 {
                    spin();
                }
                // Then a varying moment, to land anywhere in that look.
                for _ in 0..pushed % 97 {
                    std::hint::spin_loop();
                }
                sink.push(&frame, 1);
            }
            sink.close(CloseReason::Shutdown);
        });
        let deadline = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(deadline);
        let mut taken = 0;
        let reason = loop {
            // The deadline is looked at first: a poll after it would find the waiting
            // event without a wake-up.
            let next = tokio::select! {
                biased;
                () = &mut deadline => panic!("the reader stalled after {taken} of {EVENTS} events"),
                next = outbound.next() => next,
            };
            match next {
                Some(Outbound::Events(pending)) => {
                    let events = pending.drain(drop);
                    pending.queue().written(events);
                    taken += events;
                }
                Some(Outbound::Close(reason)) => break reason,
                None => panic!("the stream ended before the close"),
            }
        };
        assert_eq!(reason, CloseReason::Shutdown);
        assert_eq!(taken, EVENTS, "every event comes before the close");
        engine.join().unwrap();
    }

    /// A reader told of the close waits for the end, which comes from another thread
    /// when the session goes: the close stays set after it is told, and the reader must
    /// still wait for the end, not for news it has already had.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_told_of_the_close_is_woken_for_the_end() {
        let sink = Arc::new(SessionSink::new(SessionId(1), UserId(1), 1024, None));
        let mut outbound = OutboundStream::new(Arc::clone(&sink));
        sink.close(CloseReason::Shutdown);
        assert!(matches!(
            outbound.next().await,
            Some(Outbound::Close(CloseReason::Shutdown))
        ));
        let ending = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sink.end_stream();
        });
        // The deadline is looked at first: a poll after it would find the end without a
        // wake-up.
        tokio::select! {
            biased;
            () = tokio::time::sleep(Duration::from_secs(20)) => panic!("the reader was never woken for the end"),
            end = outbound.next() => assert!(end.is_none(), "the end, not {end:?}"),
        }
        ending.join().unwrap();
    }

    #[test]
    fn the_stream_ends_when_the_session_is_gone_and_says_nothing_after_a_close() {
        let sink = Arc::new(SessionSink::new(SessionId(1), UserId(1), 1024, None));
        let mut outbound = OutboundStream::new(Arc::clone(&sink));
        sink.push(&typing(), 1);
        sink.close(CloseReason::SlowConsumer);
        sink.push(&typing(), 1);
        sink.end_stream();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match outbound.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Outbound::Events(pending))) => assert_eq!(pending.drain(drop), 2),
            other => panic!("expected the events first, got {other:?}"),
        }
        assert!(matches!(
            outbound.poll_next_unpin(&mut cx),
            Poll::Ready(Some(Outbound::Close(CloseReason::SlowConsumer)))
        ));
        sink.push(&typing(), 1);
        assert!(
            matches!(outbound.poll_next_unpin(&mut cx), Poll::Ready(None)),
            "the end, and no events after the close"
        );
        assert!(
            matches!(outbound.poll_next_unpin(&mut cx), Poll::Ready(None)),
            "it stays ended"
        );
    }
}
