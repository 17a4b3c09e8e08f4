//! A small bounded TTL cache for hot reads (apps, users, groups, members, device bindings).
//!
//! Every write path in this process invalidates the entries it changes; the TTL bounds how long
//! another logic process may serve a value that changed elsewhere.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    cap: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        let map = self.map.lock().expect("cache lock");
        map.get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn insert(&self, k: K, v: V) {
        let mut map = self.map.lock().expect("cache lock");
        if map.len() >= self.cap {
            // Full: drop expired entries first, then everything if that was not enough. A cache
            // miss costs one query; an unbounded map costs the process.
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            // Clear also when the sweep freed less than a quarter: a sweep that frees a few
            // entries would run again on the next insert, a full scan under the lock per insert.
            if map.len() >= self.cap - self.cap / 4 {
                map.clear();
            }
        }
        map.insert(k, (Instant::now(), v));
    }

    pub fn remove(&self, k: &K) {
        self.map.lock().expect("cache lock").remove(k);
    }

    pub fn retain(&self, mut f: impl FnMut(&K) -> bool) {
        self.map.lock().expect("cache lock").retain(|k, _| f(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_capacity_is_bounded() {
        let c = TtlCache::new(Duration::from_millis(0), 10);
        c.insert(1, "a");
        assert_eq!(c.get(&1), None, "ttl 0 never serves");
        let c = TtlCache::new(Duration::from_secs(60), 2);
        c.insert(1, "a");
        c.insert(2, "b");
        c.insert(3, "c");
        assert_eq!(c.get(&3), Some("c"));
        assert!(c.map.lock().unwrap().len() <= 2);
        // Full, and a sweep would free only one entry: emptied instead, so the next inserts do
        // not each sweep the whole map again.
        let c = TtlCache::new(Duration::from_millis(500), 8);
        c.insert(0, 0);
        std::thread::sleep(Duration::from_millis(600));
        for i in 1..8 {
            c.insert(i, i);
        }
        c.insert(100, 100);
        assert_eq!(c.map.lock().unwrap().len(), 1);
        assert_eq!(c.get(&100), Some(100));
        c.remove(&3);
        assert_eq!(c.get(&3), None);
    }
}
