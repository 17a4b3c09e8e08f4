//! Connection slots: who may hold a connection on this node, and for how long before sign-in.
//!
//! Two pools. A new connection takes a *pending* slot (`max_pending_connections`) for its
//! WebSocket upgrade and its sign-in; when its sign-in starts it trades it for a *signed-in* slot
//! (`max_connections`). A client that connects and stalls (a half-sent upgrade request, no
//! SIGN_IN) therefore holds no signed-in slot: stalled connections cannot lock signed-in clients
//! out, and each is closed `sign_in_timeout` after accept, its pending slot then free again.
//! Before sign-in a connection reads at most `pre_sign_in_max_frame` bytes per frame (see
//! [`crate::tcp`] and [`crate::ws`]), so the pending pool bounds memory as well as sockets.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's two pools.
#[derive(Debug)]
pub struct Slots {
    pending: Arc<Semaphore>,
    signed_in: Arc<Semaphore>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every signed-in slot is taken.
    SignedIn,
    /// Every pending slot is taken (connections upgrading or signing in).
    Pending,
}

impl Full {
    pub fn as_str(self) -> &'static str {
        match self {
            Full::SignedIn => "connection limit reached",
            Full::Pending => "too many connections signing in",
        }
    }
}

/// The slot one connection holds; released on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    permit: OwnedSemaphorePermit,
    signed_in: bool,
}

impl Slots {
    pub fn new(max_signed_in: usize, max_pending: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: Arc::new(Semaphore::new(max_pending)),
            signed_in: Arc::new(Semaphore::new(max_signed_in)),
        })
    }

    /// A pending slot for a new connection. Refused also when every signed-in slot is taken:
    /// its sign-in could not succeed, so the client had better try another node at once.
    pub fn admit(self: &Arc<Self>) -> Result<Slot, Full> {
        if self.signed_in.available_permits() == 0 {
            return Err(Full::SignedIn);
        }
        let permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Pending)?;
        Ok(Slot {
            slots: self.clone(),
            permit,
            signed_in: false,
        })
    }

    /// Free slots (pending, signed-in), for tests and diagnostics.
    pub fn available(&self) -> (usize, usize) {
        (
            self.pending.available_permits(),
            self.signed_in.available_permits(),
        )
    }
}

impl Slot {
    /// Trades the pending slot for a signed-in one (when the sign-in starts). Idempotent; on
    /// `Err` the pending slot is kept until the connection closes.
    pub fn promote(&mut self) -> Result<(), Full> {
        if self.signed_in {
            return Ok(());
        }
        let permit = self
            .slots
            .signed_in
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::SignedIn)?;
        // The old (pending) permit is released here.
        self.permit = permit;
        self.signed_in = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_signed_in_pools_are_separate() {
        let slots = Slots::new(1, 2);
        let mut a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        assert_eq!(slots.admit().unwrap_err(), Full::Pending);
        assert_eq!(slots.available(), (0, 1));
        a.promote().unwrap();
        a.promote().unwrap();
        assert_eq!(
            slots.available(),
            (1, 0),
            "promotion frees the pending slot"
        );
        assert_eq!(
            slots.admit().unwrap_err(),
            Full::SignedIn,
            "a full node refuses at accept"
        );
        drop(a);
        let mut c = slots.admit().unwrap();
        drop(b);
        assert_eq!(slots.available(), (1, 1));
        c.promote().unwrap();
        let mut d = slots.admit().unwrap_err();
        assert_eq!(d, Full::SignedIn);
        drop(c);
        let mut e = slots.admit().unwrap();
        let mut f = slots.admit().unwrap();
        e.promote().unwrap();
        d = f.promote().unwrap_err();
        assert_eq!(d, Full::SignedIn);
        drop(f);
        assert_eq!(slots.available(), (2, 0));
    }
}
