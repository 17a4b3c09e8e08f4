//! Seq order for the user's list, across commits that finish out of order.
//!
//! A seq is allocated before its message is stored, and two stores can commit in either order: a
//! push, or a sync, can show seq 5 while seq 4 is still being written. Delivering 5 at once would
//! lose 4 (it would look like a duplicate when it arrived), and acking 5 would hide it from every
//! device's next sync. So a message above a gap is held, and nothing past the gap is acked, until
//! the gap fills (a push or a re-sync brings the missing seq) or `gap_wait` passes: a seq still
//! missing then was never stored (a failed store) or is hidden from this owner, and is skipped.
//! A skipped seq that still arrives later (a store slower than `gap_wait`) is delivered then, out
//! of order, rather than dropped; a bounded number of skipped seqs is remembered for that.

use gim_proto::connect::v1::MessageItem;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// Skipped seqs remembered for a late delivery; the oldest are forgotten first.
const SKIPPED_MAX: usize = 1024;

#[derive(Debug)]
pub(crate) struct Ordered {
    last: i64,
    /// Whether `last` is known (a start seq was given, or a sync from 0 anchored the list).
    anchored: bool,
    held: BTreeMap<i64, MessageItem>,
    gap_since: Option<Instant>,
    gap_wait: Duration,
    skipped: BTreeSet<i64>,
}

impl Ordered {
    /// `last`: the highest seq the application already has (0 = unknown: a sync from 0, which
    /// starts after the highest ack of the user's devices, anchors the list; see [`Self::anchor`]).
    pub(crate) fn new(last: i64, gap_wait: Duration) -> Self {
        Self {
            last,
            anchored: last != 0,
            held: BTreeMap::new(),
            gap_since: None,
            gap_wait,
            skipped: BTreeSet::new(),
        }
    }

    /// The highest seq delivered with nothing missing below it (what may be acked).
    pub(crate) fn last(&self) -> i64 {
        self.last
    }

    /// The highest seq seen, delivered or held: where the next sync page starts.
    pub(crate) fn seen(&self) -> i64 {
        self.held.last_key_value().map_or(self.last, |(s, _)| *s)
    }

    /// Whether messages are held above a gap.
    pub(crate) fn has_gap(&self) -> bool {
        !self.held.is_empty()
    }

    /// When the open gap, if any, is given up.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.gap_since.map(|t| t + self.gap_wait)
    }

    /// Takes one message of the list; returns the messages now deliverable, in order.
    pub(crate) fn offer(&mut self, m: MessageItem, now: Instant) -> Vec<MessageItem> {
        if m.seq <= self.last {
            // Late: its gap was skipped before it was stored.
            return if self.skipped.remove(&m.seq) {
                vec![m]
            } else {
                Vec::new()
            };
        }
        self.held.insert(m.seq, m);
        self.release(now)
    }

    /// Gives up the open gap if its time has come; returns what that releases.
    pub(crate) fn skip_due(&mut self, now: Instant) -> Vec<MessageItem> {
        match (self.deadline(), self.held.first_key_value()) {
            (Some(at), Some((&next, _))) if at <= now => {
                for seq in (self.last + 1..next).take(SKIPPED_MAX) {
                    self.skipped.insert(seq);
                }
                while self.skipped.len() > SKIPPED_MAX {
                    self.skipped.pop_first();
                }
                self.last = next - 1;
                self.anchored = true;
                // A further gap behind this one gets its own full wait.
                self.gap_since = None;
                self.release(now)
            }
            _ => Vec::new(),
        }
    }

    /// With an unknown start, after a sync from 0: the lowest seq held (from the sync, or a push
    /// that came first) starts the list. Pushes alone never anchor it: the first to arrive need
    /// not be the lowest.
    pub(crate) fn anchor(&mut self, now: Instant) -> Vec<MessageItem> {
        match self.held.first_key_value() {
            Some((&first, _)) if !self.anchored => {
                self.last = first - 1;
                self.anchored = true;
                self.release(now)
            }
            _ => Vec::new(),
        }
    }

    fn release(&mut self, now: Instant) -> Vec<MessageItem> {
        let mut out = Vec::new();
        while let Some(e) = self.held.first_entry() {
            let seq = *e.key();
            if !self.anchored || seq != self.last + 1 {
                break;
            }
            out.push(e.remove());
            self.last = seq;
        }
        self.gap_since = if self.held.is_empty() {
            None
        } else {
            Some(self.gap_since.unwrap_or(now))
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: i64) -> MessageItem {
        MessageItem {
            seq,
            ..Default::default()
        }
    }

    fn seqs(v: Vec<MessageItem>) -> Vec<i64> {
        v.into_iter().map(|m| m.seq).collect()
    }

    #[test]
    fn a_message_above_a_gap_waits_for_the_gap_to_fill() {
        let t = Instant::now();
        let mut o = Ordered::new(3, Duration::from_secs(3));
        assert_eq!(seqs(o.offer(m(5), t)), Vec::<i64>::new());
        assert_eq!((o.last(), o.seen(), o.has_gap()), (3, 5, true));
        assert_eq!(seqs(o.offer(m(5), t)), Vec::<i64>::new(), "held once");
        assert_eq!(seqs(o.offer(m(4), t)), vec![4, 5]);
        assert_eq!((o.last(), o.has_gap(), o.deadline()), (5, false, None));
        assert!(o.offer(m(4), t).is_empty(), "a duplicate is dropped");
    }

    #[test]
    fn a_gap_is_skipped_after_the_wait_and_a_late_seq_still_delivered() {
        let t = Instant::now();
        let wait = Duration::from_secs(3);
        let mut o = Ordered::new(3, wait);
        o.offer(m(6), t);
        o.offer(m(8), t + Duration::from_secs(1));
        assert!(o.skip_due(t + wait - Duration::from_millis(1)).is_empty());
        assert_eq!(seqs(o.skip_due(t + wait)), vec![6]);
        assert_eq!(o.last(), 6);
        // The gap at 7 waits its own full time.
        assert_eq!(o.deadline(), Some(t + wait + wait));
        assert_eq!(seqs(o.skip_due(t + wait + wait)), vec![8]);
        assert_eq!(
            seqs(o.offer(m(5), t)),
            vec![5],
            "a skipped seq arrives late"
        );
        assert!(o.offer(m(5), t).is_empty(), "once");
        assert!(o.offer(m(2), t).is_empty(), "never skipped: a duplicate");
    }

    #[test]
    fn an_unknown_start_is_anchored_by_a_sync_not_by_the_first_push() {
        let t = Instant::now();
        let mut o = Ordered::new(0, Duration::from_secs(3));
        assert!(o.anchor(t).is_empty(), "nothing to anchor on");
        // Pushes of 2 and 3 overtook 1's.
        assert!(o.offer(m(3), t).is_empty());
        assert!(o.offer(m(2), t).is_empty());
        assert!(o.has_gap(), "so that the caller syncs");
        // The sync from 0 returns 1 (and the rest).
        assert!(o.offer(m(1), t).is_empty());
        assert_eq!(seqs(o.anchor(t)), vec![1, 2, 3]);
        assert_eq!(o.last(), 3);
        assert!(o.anchor(t).is_empty(), "anchored once");
        assert!(o.offer(m(1), t).is_empty(), "a duplicate after anchoring");
    }
}
