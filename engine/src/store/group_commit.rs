//! Group commit across conversations.
//!
//! Each conversation actor keeps at most one commit in flight and batches the sends that
//! arrive meanwhile. With many busy conversations that is still one transaction (and one
//! fsync) per conversation, all of them queueing for the store's few connections. Here
//! the waiting batches of every conversation share transactions: at most
//! [`Limits::commit_concurrency`](crate::Limits) run at once, and each takes everything
//! that queued while the others ran, so the transaction rate stays bounded while the
//! batches grow with the load. An idle store adds no wait: a batch that finds a
//! transaction slot free starts at once.
//!
//! For a store that asks for it ([`Store::commits_on_own_thread`]) the commits run on a
//! thread of their own, so their hops to the store's blocking threads are answered at
//! once instead of after the socket writes queued on the server's workers.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{AppendOutcome, ConversationSends, NewMessage, Store};
use crate::engine::EngineObserver;
use crate::error::StoreError;
use crate::ids::ConversationId;

type Answer = Result<Vec<AppendOutcome>, StoreError>;

/// Commits the batches of many conversations together (see the module's documentation).
pub(crate) struct GroupCommit {
    store: Arc<dyn Store>,
    observer: Option<Arc<dyn EngineObserver>>,
    queue: Mutex<Queue>,
    /// Most transactions running at once.
    concurrency: usize,
    /// Most sends one transaction carries (a single larger batch still goes alone).
    max_sends: usize,
    /// Where commits run: the commit thread, or (`None`) the caller's executor.
    thread: Option<CommitThread>,
}

/// A thread running a single-threaded tokio runtime for the commits. It stops when its
/// [`GroupCommit`] is dropped (a commit in flight then ends unanswered, which its caller
/// reports as the store being unavailable).
struct CommitThread {
    runtime: tokio::runtime::Handle,
    _stop: oneshot::Sender<()>,
}

impl CommitThread {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("courier-commit".into())
            .spawn(move || {
                // Returns when the sender is dropped; the runtime is dropped here, off any
                // executor, as tokio requires.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            runtime: handle,
            _stop: stop,
        })
    }
}

struct Queue {
    waiting: VecDeque<Waiting>,
    running: usize,
}

struct Waiting {
    batch: ConversationSends,
    answer: oneshot::Sender<Answer>,
}

impl GroupCommit {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        observer: Option<Arc<dyn EngineObserver>>,
        concurrency: usize,
        max_sends: usize,
    ) -> Self {
        let thread = if store.commits_on_own_thread() {
            CommitThread::start()
                .inspect_err(|error| {
                    tracing::warn!(%error, "no commit thread: commits run on the caller's executor");
                })
                .ok()
        } else {
            None
        };
        Self {
            thread,
            concurrency: concurrency.min(store.concurrent_writers()).max(1),
            store,
            observer,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                running: 0,
            }),
            max_sends: max_sends.max(1),
        }
    }

    /// Stores one conversation's sends, in a transaction shared with the other
    /// conversations waiting; the outcomes are those of
    /// [`MessageStore::append_messages`](super::MessageStore::append_messages).
    pub(crate) async fn append(
        self: &Arc<Self>,
        conversation: ConversationId,
        sends: Vec<NewMessage>,
    ) -> Answer {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock();
            queue.waiting.push_back(Waiting {
                batch: ConversationSends {
                    conversation,
                    sends,
                },
                answer,
            });
            let start = queue.running < self.concurrency;
            queue.running += usize::from(start);
            start
        };
        if start {
            let runner = Arc::clone(self).commit_waiting();
            match &self.thread {
                Some(thread) => drop(thread.runtime.spawn(runner)),
                None => drop(tokio::spawn(runner)),
            }
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the group commit stopped before answering".into(),
            ))
        })
    }

    /// Commits what waits, one transaction after another, until nothing does.
    async fn commit_waiting(self: Arc<Self>) {
        loop {
            let taken = {
                let mut queue = self.queue.lock();
                if queue.waiting.is_empty() {
                    // Under the lock: a batch queued from now on starts its own runner.
                    queue.running -= 1;
                    return;
                }
                self.take(&mut queue.waiting)
            };
            let (batches, answers): (Vec<_>, Vec<_>) = taken
                .into_iter()
                .map(|waiting| (waiting.batch, waiting.answer))
                .unzip();
            let conversations = batches.len();
            let sends = batches.iter().map(|batch| batch.sends.len()).sum();
            let started = Instant::now();
            // A panicking store must not take this runner's slot with it: the batches
            // waiting behind it would never be committed.
            let outcome = AssertUnwindSafe(self.store.append_message_batches(batches))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("the store panicked".into())));
            if let Some(observer) = &self.observer {
                observer.commit_finished(conversations, sends, started.elapsed(), outcome.is_ok());
            }
            match outcome {
                Ok(results) => {
                    let mut results = results.into_iter();
                    for answer in answers {
                        let result = results.next().unwrap_or_else(|| {
                            Err(StoreError::Unavailable(
                                "the store answered fewer batches than it was given".into(),
                            ))
                        });
                        let _ = answer.send(result);
                    }
                }
                Err(error) => {
                    for answer in answers {
                        let _ = answer.send(Err(error.for_each_caller()));
                    }
                }
            }
        }
    }

    /// The oldest waiting batches, up to `max_sends` sends in all (at least one batch).
    fn take(&self, waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
        let mut taken = Vec::new();
        let mut sends = 0;
        while let Some(next) = waiting.front() {
            let size = next.batch.sends.len();
            if !taken.is_empty() && sends + size > self.max_sends {
                break;
            }
            sends += size;
            taken.extend(waiting.pop_front());
        }
        taken
    }
}
