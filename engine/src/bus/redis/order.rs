//! Seq order at one node, when pushes come from several.
//!
//! Two nodes may commit sends to one conversation: the database gives them consecutive
//! seqs, but their pushes reach a third node by different paths and can arrive swapped.
//! For each conversation with members here, this keeps the next seq to hand out; a push
//! that runs ahead waits for the ones before it, and a gap that does not close soon
//! (its publisher died between commit and publish, or Redis dropped it) is filled from
//! the store. A push at or below the next seq was handed out already (a retry's
//! republish) and is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::actors::registry::Sharded;
use crate::ids::{ConversationId, Seq, UserId};
use crate::protocol::EventFrame;

/// A `message:received` push and who it is for.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    pub(crate) members: Arc<[UserId]>,
    pub(crate) except: Option<UserId>,
    pub(crate) frame: EventFrame,
}

/// A range of seqs to read from the store: after `after`, before `until` (or all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) conversation: ConversationId,
    pub(crate) after: Seq,
    pub(crate) until: Option<Seq>,
}

#[derive(Debug, Default)]
struct Track {
    /// Local users who are members: the conversation is tracked while there are any.
    users: usize,
    /// The seq to hand out next; `None` until the first push sets it.
    next: Option<Seq>,
    held: BTreeMap<Seq, Push>,
    waiting_since: Option<Instant>,
    filling: bool,
}

impl Track {
    /// Hands out every held push that is next in line.
    fn drain(&mut self, deliver: &mut impl FnMut(&Push)) {
        while let Some(next) = self.next {
            match self.held.remove(&next) {
                Some(push) => {
                    deliver(&push);
                    self.next = Some(Seq(next.0 + 1));
                }
                None => break,
            }
        }
        self.waiting_since = (!self.held.is_empty()).then(Instant::now);
    }
}

/// The order keeper of one node.
pub(crate) struct Order {
    tracks: Sharded<ConversationId, Mutex<Track>>,
}

impl Order {
    pub(crate) fn new() -> Self {
        Self {
            tracks: Sharded::new(),
        }
    }

    /// One more local member of `conversation`, whose last seq was `last_seq` when
    /// read. `true` when the conversation was not tracked before (subscribe to it).
    pub(crate) fn track(&self, conversation: ConversationId, last_seq: Option<Seq>) -> bool {
        let mut shard = self.tracks.shard(&conversation).write();
        match shard.get(&conversation) {
            Some(track) => {
                track.lock().users += 1;
                false
            }
            None => {
                let track = Track {
                    users: 1,
                    next: last_seq.map(|seq| Seq(seq.0 + 1)),
                    ..Track::default()
                };
                shard.insert(conversation, Mutex::new(track));
                true
            }
        }
    }

    /// Whether a user here is in `conversation` (its channel is wanted).
    pub(crate) fn is_tracked(&self, conversation: ConversationId) -> bool {
        self.tracks
            .shard(&conversation)
            .read()
            .contains_key(&conversation)
    }

    /// One local member fewer. `true` when none is left (unsubscribe).
    pub(crate) fn untrack(&self, conversation: ConversationId) -> bool {
        let mut shard = self.tracks.shard(&conversation).write();
        let gone = match shard.get(&conversation) {
            Some(track) => {
                let mut track = track.lock();
                track.users = track.users.saturating_sub(1);
                track.users == 0
            }
            None => return false,
        };
        if gone {
            shard.remove(&conversation);
        }
        gone
    }

    /// The conversations tracked, with the seq each expects next.
    pub(crate) fn tracked(&self) -> Vec<(ConversationId, Option<Seq>)> {
        let mut all = Vec::new();
        for shard in self.tracks.shards() {
            all.extend(
                shard
                    .read()
                    .iter()
                    .map(|(&id, track)| (id, track.lock().next)),
            );
        }
        all
    }

    /// Offers the push of `seq`: `deliver` runs for it and every push it unblocks, in
    /// seq order, while the conversation's lock is held (so two threads' pushes cannot
    /// interleave). An untracked conversation has no members here to order for.
    pub(crate) fn offer(
        &self,
        conversation: ConversationId,
        seq: Seq,
        push: Push,
        mut deliver: impl FnMut(&Push),
    ) {
        let shard = self.tracks.shard(&conversation).read();
        let Some(track) = shard.get(&conversation) else {
            drop(shard);
            deliver(&push);
            return;
        };
        let mut track = track.lock();
        let next = *track.next.get_or_insert(seq);
        if seq < next {
            return;
        }
        track.held.insert(seq, push);
        track.drain(&mut deliver);
    }

    /// Gaps that pushes have waited on longer than `wait`, now marked as being filled.
    pub(crate) fn overdue(&self, wait: Duration) -> Vec<Gap> {
        let mut gaps = Vec::new();
        for shard in self.tracks.shards() {
            for (&conversation, track) in shard.read().iter() {
                let mut track = track.lock();
                let late = track
                    .waiting_since
                    .is_some_and(|since| since.elapsed() >= wait);
                if let (true, false, Some(next), Some((&first_held, _))) = (
                    late,
                    track.filling,
                    track.next,
                    track.held.first_key_value(),
                ) {
                    track.filling = true;
                    gaps.push(Gap {
                        conversation,
                        after: Seq(next.0 - 1),
                        until: Some(first_held),
                    });
                }
            }
        }
        gaps
    }

    /// Catching up after missed pushes: a gap from each tracked conversation's next seq
    /// to the newest, marked as being filled.
    pub(crate) fn catch_up(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        for shard in self.tracks.shards() {
            for (&conversation, track) in shard.read().iter() {
                let mut track = track.lock();
                if let (false, Some(next)) = (track.filling, track.next) {
                    track.filling = true;
                    gaps.push(Gap {
                        conversation,
                        after: Seq(next.0 - 1),
                        until: None,
                    });
                }
            }
        }
        gaps
    }

    /// Catching up on one conversation just tracked from a known seq (pushes published
    /// before this node listened never come): the gap from its next seq to the newest,
    /// marked as being filled. `None` while a fill is under way or no seq is known.
    pub(crate) fn catch_up_one(&self, conversation: ConversationId) -> Option<Gap> {
        let shard = self.tracks.shard(&conversation).read();
        let mut track = shard.get(&conversation)?.lock();
        match (track.filling, track.next) {
            (false, Some(next)) => {
                track.filling = true;
                Some(Gap {
                    conversation,
                    after: Seq(next.0 - 1),
                    until: None,
                })
            }
            _ => None,
        }
    }

    /// The store's answer for a gap: `pushes` in seq order (or nothing, if it could not
    /// be read). Hands out what is next; a gap the store cannot close is skipped, since
    /// clients recover anything missing with `sync`.
    pub(crate) fn fill(
        &self,
        gap: Gap,
        pushes: Vec<(Seq, Push)>,
        read: bool,
        mut deliver: impl FnMut(&Push),
    ) {
        let shard = self.tracks.shard(&gap.conversation).read();
        let Some(track) = shard.get(&gap.conversation) else {
            return;
        };
        let mut track = track.lock();
        track.filling = false;
        for (seq, push) in pushes {
            if track.next.is_some_and(|next| seq >= next) {
                // In place of a push that came meanwhile: the store's member list is newer
                // than its publisher's, which may not have heard of a join yet.
                track.held.insert(seq, push);
            }
        }
        track.drain(&mut deliver);
        let stuck = gap.until.is_some() || !read;
        if stuck && let Some((&first, _)) = track.held.first_key_value() {
            track.next = Some(first);
            track.drain(&mut deliver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ServerEvent, TypingChanged};

    const CONVERSATION: ConversationId = ConversationId(1);

    fn push() -> Push {
        Push {
            members: Arc::from([UserId(1)]),
            except: None,
            frame: ServerEvent::TypingStarted(TypingChanged {
                conversation_id: CONVERSATION,
                user_id: UserId(1),
            })
            .encode(),
        }
    }

    /// Offers `seqs` in turn and returns what was handed out, in order.
    fn offer_all(order: &Order, seqs: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        for &seq in seqs {
            let mut handed = Vec::new();
            order.offer(CONVERSATION, Seq(seq), push(), |_| handed.push(()));
            // Which seqs came out is inferred from how many: the test feeds known orders.
            out.push(handed.len() as i64);
        }
        out
    }

    #[test]
    fn swapped_pushes_come_out_in_seq_order() {
        let order = Order::new();
        assert!(order.track(CONVERSATION, Some(Seq(4))));
        // 6 waits for 5; 5 releases both; 7 goes at once; a second 6 is a duplicate.
        assert_eq!(offer_all(&order, &[6, 5, 7, 6]), vec![0, 2, 1, 0]);
    }

    #[test]
    fn pushes_at_or_below_the_baseline_are_dropped() {
        let order = Order::new();
        order.track(CONVERSATION, Some(Seq(10)));
        assert_eq!(offer_all(&order, &[9, 10, 11]), vec![0, 0, 1]);
    }

    #[test]
    fn an_overdue_gap_is_filled_from_the_store_in_order() {
        let order = Order::new();
        order.track(CONVERSATION, Some(Seq(0)));
        assert_eq!(offer_all(&order, &[3]), vec![0]);
        let gaps = order.overdue(Duration::ZERO);
        assert_eq!(
            gaps,
            vec![Gap {
                conversation: CONVERSATION,
                after: Seq(0),
                until: Some(Seq(3))
            }]
        );
        assert!(
            order.overdue(Duration::ZERO).is_empty(),
            "one fill at a time"
        );
        let mut handed = 0;
        order.fill(
            gaps[0],
            vec![(Seq(1), push()), (Seq(2), push())],
            true,
            |_| handed += 1,
        );
        assert_eq!(handed, 3, "1 and 2 from the store, then the held 3");
        assert_eq!(offer_all(&order, &[4]), vec![1]);
    }

    #[test]
    fn a_fill_hands_out_its_audience_for_a_seq_that_was_also_pushed() {
        let order = Order::new();
        order.track(CONVERSATION, Some(Seq(0)));
        let gap = order.catch_up_one(CONVERSATION).unwrap();
        // 2 comes from a node whose member list lacks user 2; the store's has them.
        let mut late = push();
        late.members = Arc::from([UserId(1)]);
        order.offer(CONVERSATION, Seq(2), late, |_| panic!("2 waits for 1"));
        let mut current = push();
        current.members = Arc::from([UserId(1), UserId(2)]);
        let mut audiences = Vec::new();
        order.fill(
            gap,
            vec![(Seq(1), current.clone()), (Seq(2), current)],
            true,
            |push| audiences.push(push.members.len()),
        );
        assert_eq!(audiences, vec![2, 2]);
    }

    #[test]
    fn a_gap_the_store_cannot_close_is_skipped() {
        let order = Order::new();
        order.track(CONVERSATION, Some(Seq(0)));
        offer_all(&order, &[5]);
        let gaps = order.overdue(Duration::ZERO);
        let mut handed = 0;
        order.fill(gaps[0], Vec::new(), false, |_| handed += 1);
        assert_eq!(handed, 1);
        assert_eq!(offer_all(&order, &[6]), vec![1]);
    }

    #[test]
    fn a_conversation_just_tracked_catches_up_from_its_baseline_once() {
        let order = Order::new();
        assert_eq!(order.catch_up_one(CONVERSATION), None, "not tracked");
        order.track(CONVERSATION, Some(Seq(6)));
        let gap = order.catch_up_one(CONVERSATION);
        assert_eq!(
            gap,
            Some(Gap {
                conversation: CONVERSATION,
                after: Seq(6),
                until: None
            })
        );
        assert_eq!(order.catch_up_one(CONVERSATION), None, "one fill at a time");
        // 9 arrives while 7 and 8, published before the subscription, are read.
        assert_eq!(offer_all(&order, &[9]), vec![0]);
        let mut handed = 0;
        order.fill(
            gap.unwrap(),
            vec![(Seq(7), push()), (Seq(8), push()), (Seq(9), push())],
            true,
            |_| handed += 1,
        );
        assert_eq!(handed, 3, "7, 8 and 9, each once");
        assert_eq!(offer_all(&order, &[9, 10]), vec![0, 1]);
    }

    #[test]
    fn tracking_counts_local_members() {
        let order = Order::new();
        assert!(order.track(CONVERSATION, None));
        assert!(!order.track(CONVERSATION, None));
        assert!(!order.untrack(CONVERSATION));
        assert!(order.untrack(CONVERSATION));
        assert!(order.tracked().is_empty());
        // Untracked: pushes pass straight through.
        assert_eq!(offer_all(&order, &[9, 3]), vec![1, 1]);
    }
}
