//! Presigned URLs kept for reuse: a direct-mapped table, one slot per hash of
//! the request's key, each slot behind its own lock.
//!
//! It replaced a mini-moka cache (issue 13): a lookup there cost ~1.4k
//! instructions per pass-through request (its read log, frequency sketch
//! and expiry bookkeeping), ~3% of the request; a slot costs a hash, an
//! uncontended lock and a clock read. A reuse table needs none of a
//! cache's policy: a miss only means signing again (a few microseconds),
//! so two keys sharing a slot simply take turns, and an entry expires by
//! its age alone.

use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

/// A table of `T`s by key, each reused for `ttl` after it was made.
pub(super) struct Reuse<T> {
    hasher: RandomState,
    ttl: Duration,
    slots: Box<[Mutex<Option<Slot<T>>>]>,
}

struct Slot<T> {
    key: Box<str>,
    value: Arc<T>,
    made: Instant,
}

impl<T> Reuse<T> {
    /// A table of at least `slots` slots (rounded up to a power of two)
    /// whose entries live for `ttl`.
    pub(super) fn new(slots: usize, ttl: Duration) -> Self {
        Self {
            hasher: RandomState::default(),
            ttl,
            slots: (0..slots.max(1).next_power_of_two())
                .map(|_| Mutex::new(None))
                .collect(),
        }
    }

    fn slot(&self, key: &str) -> std::sync::MutexGuard<'_, Option<Slot<T>>> {
        let i = self.hasher.hash_one(key) as usize & (self.slots.len() - 1);
        // A poisoned slot holds a whole entry or none: keep using it.
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value kept for `key`, unless it is older than the ttl (or was
    /// pushed out by another key).
    pub(super) fn get(&self, key: &str) -> Option<Arc<T>> {
        match &*self.slot(key) {
            Some(slot) if &*slot.key == key && slot.made.elapsed() < self.ttl => Some(slot.value.clone()),
            _ => None,
        }
    }

    /// Keeps `value` for `key`, in place of whatever its slot held.
    pub(super) fn insert(&self, key: &str, value: Arc<T>) {
        *self.slot(key) = Some(Slot {
            key: key.into(),
            value,
            made: Instant::now(),
        });
    }

    /// The keys held, expired or not (for tests).
    #[cfg(test)]
    pub(super) fn keys(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter_map(|s| s.lock().unwrap().as_ref().map(|s| s.key.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_found_by_its_key_until_it_expires() {
        let table = Reuse::new(64, Duration::from_millis(200));
        table.insert("a", Arc::new(1));
        assert_eq!(table.get("a").as_deref(), Some(&1));
        assert_eq!(table.get("b"), None);
        table.insert("a", Arc::new(2));
        assert_eq!(table.get("a").as_deref(), Some(&2), "an insert replaces");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(table.get("a"), None, "expired");
    }

    #[test]
    fn keys_sharing_a_slot_never_see_each_others_values() {
        // One slot: every key shares it.
        let table = Reuse::new(1, Duration::from_secs(60));
        table.insert("a", Arc::new(1));
        assert_eq!(table.get("b"), None);
        table.insert("b", Arc::new(2));
        assert_eq!(table.get("a"), None, "pushed out");
        assert_eq!(table.get("b").as_deref(), Some(&2));
        assert_eq!(table.keys(), ["b"]);
    }

    #[test]
    fn a_table_has_a_power_of_two_slots() {
        assert_eq!(Reuse::<u8>::new(1000, Duration::ZERO).slots.len(), 1024);
        assert_eq!(Reuse::<u8>::new(0, Duration::ZERO).slots.len(), 1);
    }
}
