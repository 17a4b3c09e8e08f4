//! Large-group pushes held for a short window and fanned out together.
//!
//! A large group's message goes to every local member connection: one queue push, one task
//! wake-up and one socket write per member, so a busy group of 10 000 members costs a node as
//! many writes per second as messages times members, and the client side as many reads. When a
//! group sends faster than one message per window, this holds the messages that follow the first
//! and queues them to every member together at the window's end: each member then gets them in
//! one wake-up and one write (the session writes everything queued before one flush).
//!
//! The first message after a quiet window goes out at once (leading edge), so a group that sends
//! less than one message per window pays no latency; a busy one pays at most the window. Order
//! within a group is kept: held messages are queued after the one sent at once, in arrival order.

use crate::hub::{Hub, Push};
use bytes::Bytes;
use gim_common::{AppId, GroupId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Most messages held for one group; one more sends them all at once (a flood must not grow
/// memory, and a window's worth of them is already one write per member).
pub const HELD_MAX: usize = 256;

/// Groups with a slot above which a new group's first message sweeps the quiet ones out.
const SLOTS_SWEEP: usize = 256;

/// One held message: its frame and the device that sent it (no echo to it; 0 = none).
type Held = (Bytes, i64);

#[derive(Debug, Default)]
struct Slot {
    /// Before this instant a new message is held; from it on, one goes out at once.
    quiet_at: Option<Instant>,
    held: Vec<Held>,
}

#[derive(Debug)]
pub struct Coalescer {
    hub: Arc<Hub>,
    window: Duration,
    slots: Mutex<HashMap<(AppId, GroupId), Slot>>,
}

/// What [`Coalescer::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued to the members now; how many connections got it.
    Sent(u32),
    /// Held for the group's window; the members it will go to, as the index has them now.
    Held(u32),
}

impl Coalescer {
    /// `window` zero sends every message at once.
    pub fn new(hub: Arc<Hub>, window: Duration) -> Arc<Self> {
        Arc::new(Self {
            hub,
            window,
            slots: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AppId, GroupId), Slot>> {
        // Slots hold only frames and instants: a panic elsewhere cannot leave one inconsistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a large-group message to the local members now, or holds it for the group's
    /// window (then a task queues everything held when the window ends).
    pub fn offer(
        self: &Arc<Self>,
        app: AppId,
        group: GroupId,
        frame: Bytes,
        exclude: i64,
    ) -> Offered {
        if self.window.is_zero() {
            return Offered::Sent(self.fan_out(app, group, &[(frame, exclude)]));
        }
        let now = Instant::now();
        // Some(arm): held, and `arm` is when to flush if this message is the first one held.
        let held: Option<Option<Instant>> = {
            let mut slots = self.lock();
            if slots.len() > SLOTS_SWEEP && !slots.contains_key(&(app, group)) {
                // Drop the slots of groups that went quiet: the map holds only busy groups.
                slots.retain(|_, s| !s.held.is_empty() || s.quiet_at.is_some_and(|t| t > now));
            }
            let slot = slots.entry((app, group)).or_default();
            if slot.held.is_empty() && slot.quiet_at.is_none_or(|t| now >= t) {
                slot.quiet_at = Some(now + self.window);
                None
            } else if slot.held.len() >= HELD_MAX {
                // Too many for one window: send them all now; the armed flush finds none left.
                let mut held = std::mem::take(&mut slot.held);
                held.push((frame, exclude));
                slot.quiet_at = Some(now + self.window);
                drop(slots);
                return Offered::Sent(self.fan_out(app, group, &held));
            } else {
                slot.held.push((frame.clone(), exclude));
                // The first held message arms the flush; later ones ride along.
                Some((slot.held.len() == 1).then(|| slot.quiet_at.unwrap_or(now).max(now)))
            }
        };
        match held {
            None => Offered::Sent(self.fan_out(app, group, &[(frame, exclude)])),
            Some(arm) => {
                if let Some(at) = arm {
                    let me = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        me.flush(app, group);
                    });
                }
                Offered::Held(self.hub.group_len(app, group) as u32)
            }
        }
    }

    /// Queues everything held for a group and starts its next window.
    fn flush(&self, app: AppId, group: GroupId) {
        let held = {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(&(app, group)) else {
                return;
            };
            if slot.held.is_empty() {
                return; // sent early (the group held HELD_MAX)
            }
            slot.quiet_at = Some(Instant::now() + self.window);
            std::mem::take(&mut slot.held)
        };
        self.fan_out(app, group, &held);
    }

    /// Queues frames to every local member connection except each frame's sender device;
    /// returns the connections that got at least one.
    fn fan_out(&self, app: AppId, group: GroupId, frames: &[Held]) -> u32 {
        let mut reached = 0;
        for c in self.hub.group_conns(app, group) {
            let device = c.identity().map(|w| w.device.get()).unwrap_or(0);
            let mine = frames
                .iter()
                .filter(|(_, ex)| *ex == 0 || *ex != device)
                .map(|(f, _)| f.clone());
            if c.push_many(mine) == Some(Push::Queued) {
                reached += 1;
            }
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Conn, Identity};
    use gim_common::{DeviceId, UserId};

    const APP: AppId = AppId(1);
    const G: GroupId = GroupId(7);

    fn member(hub: &Hub, user: i64, device: i64) -> Arc<Conn> {
        let c = hub.register();
        let who = Identity {
            app: APP,
            user: UserId(user),
            device: DeviceId(device),
        };
        hub.signed_in(&c, who, &[G.0]);
        c
    }

    fn queued(c: &Conn) -> Vec<Bytes> {
        std::iter::from_fn(|| c.pop()).collect()
    }

    fn f(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_group_is_held_for_the_window_then_fanned_out_in_order() {
        let hub = Arc::new(Hub::new(64));
        let (a, b) = (member(&hub, 10, 100), member(&hub, 11, 110));
        let co = Coalescer::new(hub.clone(), Duration::from_millis(50));

        // The first message of a quiet group goes out at once.
        assert_eq!(co.offer(APP, G, f("m1"), 0), Offered::Sent(2));
        assert_eq!(queued(&a), vec![f("m1")]);
        assert_eq!(queued(&b), vec![f("m1")]);

        // Inside the window: held, nothing queued yet; b's own message is not echoed to b.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(co.offer(APP, G, f("m2"), 110), Offered::Held(2));
        assert_eq!(co.offer(APP, G, f("m3"), 0), Offered::Held(2));
        tokio::task::yield_now().await;
        assert!(queued(&a).is_empty() && queued(&b).is_empty());

        // The window ends 50 ms after m1: both held messages together, in arrival order.
        tokio::time::sleep(Duration::from_millis(41)).await;
        assert_eq!(queued(&a), vec![f("m2"), f("m3")]);
        assert_eq!(queued(&b), vec![f("m3")]);

        // A message right after the flush is inside the next window: held again.
        assert_eq!(co.offer(APP, G, f("m4"), 0), Offered::Held(2));
        tokio::time::sleep(Duration::from_millis(51)).await;
        assert_eq!(queued(&a), vec![f("m4")]);
        assert_eq!(queued(&b), vec![f("m4")]);

        // A full quiet window later, the next message goes out at once again.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(co.offer(APP, G, f("m5"), 0), Offered::Sent(2));
        assert_eq!(queued(&b), vec![f("m5")]);
    }

    #[tokio::test(start_paused = true)]
    async fn groups_have_their_own_windows_and_zero_turns_holding_off() {
        let hub = Arc::new(Hub::new(64));
        let a = member(&hub, 10, 100);
        let other = hub.register();
        let who = Identity {
            app: APP,
            user: UserId(12),
            device: DeviceId(120),
        };
        hub.signed_in(&other, who, &[8]);
        let co = Coalescer::new(hub.clone(), Duration::from_millis(50));
        assert_eq!(co.offer(APP, G, f("g7"), 0), Offered::Sent(1));
        // Another group is quiet: its first message is not held behind group 7's window.
        assert_eq!(co.offer(APP, GroupId(8), f("g8"), 0), Offered::Sent(1));
        assert_eq!(queued(&other), vec![f("g8")]);

        let off = Coalescer::new(hub.clone(), Duration::ZERO);
        for m in ["x", "y", "z"] {
            assert_eq!(off.offer(APP, G, f(m), 0), Offered::Sent(1));
        }
        assert_eq!(queued(&a), vec![f("g7"), f("x"), f("y"), f("z")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_is_sent_early_rather_than_held_without_bound() {
        let hub = Arc::new(Hub::new(4 * HELD_MAX));
        let a = member(&hub, 10, 100);
        let co = Coalescer::new(hub.clone(), Duration::from_millis(50));
        let frames: Vec<Bytes> = (0..HELD_MAX + 2)
            .map(|i| Bytes::from(i.to_string()))
            .collect();
        assert_eq!(co.offer(APP, G, frames[0].clone(), 0), Offered::Sent(1));
        for fr in &frames[1..=HELD_MAX] {
            assert_eq!(co.offer(APP, G, fr.clone(), 0), Offered::Held(1));
        }
        // One more than a window holds: everything goes out now, in order.
        let last = frames[HELD_MAX + 1].clone();
        assert_eq!(co.offer(APP, G, last, 0), Offered::Sent(1));
        assert_eq!(queued(&a), frames);
        // The flush armed by the first held message finds nothing left and queues nothing twice.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(queued(&a).is_empty());
    }

    #[test]
    fn push_many_queues_under_one_bound() {
        let c = Conn::new(gim_common::ConnId(1), 2);
        assert_eq!(c.push_many(std::iter::empty()), None);
        assert_eq!(
            c.push_many([f("a"), f("b")].into_iter()),
            Some(Push::Queued)
        );
        assert_eq!(c.push_many([f("c")].into_iter()), Some(Push::Overflow));
        assert_eq!(c.push_many([f("d")].into_iter()), Some(Push::Closed));
    }
}
