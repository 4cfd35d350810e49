//! Presence announcements, batched.
//!
//! Telling contacts that a user came online or went offline needs the user's contacts
//! from the store. When thousands of users connect or drop at once (a deploy, a network
//! blip), one query each would queue on the connection pool until some time out and
//! their announcements are lost. Instead, announcements gathered over a short window go
//! together: one query finds every contact of the batch, one transaction stores every
//! `lastSeen`, and a failing store is retried before anyone is skipped.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::bus::{Audience, Bus};
use crate::ids::{Timestamp, UserId};
use crate::protocol::ServerEvent;
use crate::store::Store;

/// How long an announcement waits for others to join its batch.
const WINDOW: Duration = Duration::from_millis(50);
/// Most users in one batch (one contacts query).
const MAX_BATCH: usize = 512;
/// Pauses before the store is tried again for a batch.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
];

struct Announcement {
    user: UserId,
    events: Vec<ServerEvent>,
    done: oneshot::Sender<()>,
}

/// Announces presence changes to contacts, in batches.
pub(crate) struct Announcer {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Started on first use, on the arbiter of whoever announces first.
    queue: OnceLock<mpsc::UnboundedSender<Announcement>>,
}

impl Announcer {
    pub(crate) fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        Self {
            store,
            bus,
            queue: OnceLock::new(),
        }
    }

    /// Tells everyone who shares a conversation with `user` (and the user's own
    /// sessions) about `events`, in order. Resolves once they are published, so that
    /// one user's announcements, awaited in turn, stay in order.
    pub(crate) fn announce(
        &self,
        user: UserId,
        events: Vec<ServerEvent>,
    ) -> impl Future<Output = ()> + use<> {
        let (done, published) = oneshot::channel();
        let queue = self.queue.get_or_init(|| {
            let (queue, incoming) = mpsc::unbounded_channel();
            actix::spawn(run(
                Arc::clone(&self.store),
                Arc::clone(&self.bus),
                incoming,
            ));
            queue
        });
        let announcement = Announcement { user, events, done };
        let queued = queue.send(announcement).is_ok();
        async move {
            if queued {
                let _ = published.await;
            }
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut incoming: mpsc::UnboundedReceiver<Announcement>,
) {
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, incoming.recv()).await {
                Ok(Some(announcement)) => batch.push(announcement),
                Ok(None) | Err(_) => break,
            }
        }
        publish(&*store, &*bus, batch).await;
    }
}

async fn publish(store: &dyn Store, bus: &dyn Bus, batch: Vec<Announcement>) {
    // lastSeen is stored before contacts hear "offline", so a presence query made on
    // that event already sees it.
    let seen: Vec<(UserId, Timestamp)> = batch
        .iter()
        .flat_map(|announcement| {
            announcement.events.iter().filter_map(|event| match event {
                ServerEvent::UserOffline(change) => change.last_seen.map(|at| (change.user_id, at)),
                _ => None,
            })
        })
        .collect();
    if !seen.is_empty() && retried(|| store.set_last_seen_many(&seen)).await.is_none() {
        tracing::warn!(users = seen.len(), "could not record lastSeen");
    }
    let mut users: Vec<UserId> = batch.iter().map(|announcement| announcement.user).collect();
    users.sort_unstable();
    users.dedup();
    let mut contacts: HashMap<UserId, Vec<UserId>> = HashMap::new();
    match retried(|| store.contacts_of_many(&users)).await {
        Some(pairs) => {
            for (user, contact) in pairs {
                contacts.entry(user).or_default().push(contact);
            }
        }
        // Only the users' own sessions hear it; contacts see the truth in presence
        // queries and at the next change.
        None => tracing::warn!(users = users.len(), "presence: contacts unavailable"),
    }
    for announcement in batch {
        let mut audience = contacts
            .get(&announcement.user)
            .cloned()
            .unwrap_or_default();
        audience.push(announcement.user);
        let audience: Arc<[UserId]> = audience.into();
        for event in &announcement.events {
            bus.publish(Audience::Users(Arc::clone(&audience)), event.encode());
        }
        let _ = announcement.done.send(());
    }
}

/// Runs `attempt` until it succeeds, pausing between tries; `None` if it never did.
async fn retried<T, F, Fut>(mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, crate::StoreError>>,
{
    for pause in RETRIES {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::debug!(%error, "presence store call failed; retrying");
                actix::clock::sleep(pause).await;
            }
        }
    }
    attempt().await.ok()
}
