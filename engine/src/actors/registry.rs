//! Sharded maps from ids to live actors and sessions.
//!
//! Finding a conversation's or a user's actor takes a lock on one of many shards, never
//! a trip through a central actor's mailbox, so lookups from many threads do not queue
//! behind each other.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use parking_lot::RwLock;
use rustc_hash::FxBuildHasher;

const SHARDS: usize = 64;

/// A concurrent map split into independently locked shards.
///
/// Keys are ids the database assigned, never strings a client chose, so the fast
/// non-keyed Fx hash is safe here; it is hashed on every delivery of the fan-out path.
pub(crate) struct Sharded<K, V> {
    shards: Box<[RwLock<HashMap<K, V, FxBuildHasher>>]>,
    hasher: FxBuildHasher,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            hasher: FxBuildHasher,
        }
    }

    pub(crate) fn shard(&self, key: &K) -> &RwLock<HashMap<K, V, FxBuildHasher>> {
        // The high bits: Fx's low bits are weak for sequential integers.
        let index = (self.hasher.hash_one(key) >> 32) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Runs `read` on the value under a shared lock.
    pub(crate) fn with<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
        self.shard(key).read().get(key).map(read)
    }

    /// Every shard, to walk the whole map one lock at a time.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn shards(&self) -> &[RwLock<HashMap<K, V, FxBuildHasher>>] {
        &self.shards
    }

    /// Maps every value under its shard's read lock.
    pub(crate) fn values_with<R>(&self, map: impl Fn(&V) -> R) -> Vec<R> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().values().map(&map));
        }
        out
    }

    /// How many entries there are (walks every shard; for metrics and tests).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().len()).sum()
    }
}
