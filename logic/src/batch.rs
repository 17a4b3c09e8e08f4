//! Natural batching ("group commit") of small store operations.
//!
//! Under load the cost of a MySQL statement is dominated by its round trip (syscalls on both
//! sides, a thread wake-up in MariaDB, a log flush per commit), not by the rows it touches. A
//! [`Batcher`] lets concurrent callers share round trips: each call queues its item; a runner
//! takes everything queued so far (up to `max_batch`) and executes it as one batch. There is no
//! timer: when the store keeps up, a batch holds one item and runs at once, so light load pays
//! only a channel hop; when it does not, items pile up while `concurrency` batches are in flight
//! and the next batch is larger. The cost per item then falls as load rises instead of queueing.
//!
//! A batch runs in its own task, so a caller that goes away (a cancelled gRPC call) never leaves
//! a statement half-read on a pooled connection, and its item is still stored or not as a whole.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

type Job<T, R> = (T, oneshot::Sender<R>);

pub struct Batcher<T, R> {
    tx: mpsc::Sender<Job<T, R>>,
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the runner. `run` gets a non-empty batch and must return one result per item, in
    /// order. Needs a tokio runtime.
    pub fn spawn<F, Fut>(max_batch: usize, concurrency: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Job<T, R>>(max_batch * concurrency.max(1) * 4);
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let run = Arc::new(run);
        tokio::spawn(async move {
            loop {
                // A permit first: while every batch slot is busy, items keep queueing and the
                // next batch takes them all.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else { return };
                let mut batch = Vec::with_capacity(8);
                batch.push(first);
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                // A caller that went away (its call was cancelled) is not run for nobody.
                batch.retain(|(_, reply)| !reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                        batch.into_iter().unzip();
                    let n = items.len();
                    let results = run(items).await;
                    debug_assert_eq!(results.len(), n, "one result per item");
                    for (r, reply) in results.into_iter().zip(replies) {
                        let _ = reply.send(r);
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// Queues `item` and waits for its result. None only when the runner is gone (shutdown).
    pub async fn call(&self, item: T) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((item, tx)).await.ok()?;
        rx.await.ok()
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, crate::error::Result<R>> {
    /// [`Self::call`] for batchers whose results are `Result`s: a stopped runner (only while
    /// the process shuts down) is an internal error naming the batcher (`what`).
    pub async fn try_call(&self, item: T, what: &'static str) -> crate::error::Result<R> {
        self.call(item)
            .await
            .unwrap_or_else(|| Err(crate::error::Error::Internal(format!("{what} stopped"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_result() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Arc::new(Batcher::spawn(16, 1, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(items.len());
                // A slow store: later calls queue behind this batch.
                tokio::time::sleep(Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 10).collect::<Vec<_>>()
            }
        }));
        let calls: Vec<_> = (0..40u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.call(i).await) })
            })
            .collect();
        for c in calls {
            let (i, r) = c.await.unwrap();
            assert_eq!(r, Some(i * 10), "item {i} got another item's result");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(
            sizes.iter().all(|&s| s <= 16),
            "max_batch respected: {sizes:?}"
        );
        assert!(
            sizes.len() < 40,
            "calls made while a batch was in flight were batched together: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn callers_that_went_away_are_not_run() {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let seen = ran.clone();
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let b = Arc::new(Batcher::spawn(16, 1, move |items: Vec<u32>| {
            let (seen, mut gate) = (seen.clone(), gate_rx.clone());
            async move {
                seen.lock().unwrap().extend(items.iter().copied());
                // The first batch holds the only slot until the test opens the gate.
                let _ = gate.wait_for(|open| *open).await;
                items
            }
        }));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1).await }
        });
        while ran.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Queued behind the busy slot, then cancelled before its batch starts.
        let gone = tokio::spawn({
            let b = b.clone();
            async move { b.call(2).await }
        });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        let third = tokio::spawn({
            let b = b.clone();
            async move { b.call(3).await }
        });
        gate_tx.send(true).unwrap();
        assert_eq!(first.await.unwrap(), Some(1));
        assert_eq!(third.await.unwrap(), Some(3));
        assert_eq!(*ran.lock().unwrap(), vec![1, 3], "the cancelled call ran");
    }

    #[tokio::test]
    async fn a_lone_call_runs_at_once() {
        let b = Batcher::spawn(16, 2, |items: Vec<u8>| async move { items });
        let r = tokio::time::timeout(Duration::from_secs(1), b.call(7)).await;
        assert_eq!(r.unwrap(), Some(7));
    }
}
