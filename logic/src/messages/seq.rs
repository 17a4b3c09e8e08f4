//! Sequence numbers and ids.
//!
//! Seqs come from Redis (`HINCRBY` in a Lua script, one call per batch of lists, no MySQL round
//! trip on the hot path) but are only used once MySQL's `seq_block.max_seq` covers them: when a
//! counter passes its reserved high-water mark `hw`, the allocator raises `max_seq` (one multi-row
//! upsert for the whole batch) before returning. If Redis loses a counter (flush, failover), the
//! next allocation finds it missing, reserves a fresh block above `max_seq` in MySQL and re-seeds
//! the counter there, so seqs keep increasing and none is ever reused (SPEC §4).

use crate::batch::Batcher;
use crate::db;
use crate::error::{Error, Result};
use crate::limits::Rate;
use crate::metrics::Metrics;
use crate::rds::{Redis, Scripts, group_seq_key, slot, user_seq_key};
use gim_common::{AppId, GroupId, Seq, UserId};
use sqlx::MySqlPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One message list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListId {
    User(AppId, UserId),
    Group(AppId, GroupId),
}

impl ListId {
    fn key(self) -> String {
        match self {
            ListId::User(a, u) => user_seq_key(a, u),
            ListId::Group(a, g) => group_seq_key(a, g),
        }
    }

    /// `seq_block.object_type`: 1 user list, 2 large-group list.
    fn parts(self) -> (i64, i8, i64) {
        match self {
            ListId::User(a, u) => (a.0, 1, u.0),
            ListId::Group(a, g) => (a.0, 2, g.0),
        }
    }
}

/// How long a request mark lives: a client's resend within this time costs one Redis script and
/// no MySQL read to tell it from a first send. A later resend is still answered with its first
/// result (the store's claim catches it) but leaves a gap in the lists its seqs came from.
pub const MARK_TTL_SECS: u64 = 120;

/// A `seq_block` row's key: (app, object type, object id).
type SeedKey = (i64, i8, i64);

/// What a send checks in the same Redis call as its allocation, all in the slot of
/// `lists[with]` (the sender's own list): a rate limit, then a request mark.
#[derive(Debug, Clone, Default)]
pub struct Gate<'a> {
    pub rate: Option<Rate>,
    pub mark: Option<&'a str>,
    pub with: usize,
}

/// An allocation behind a [`Gate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alloc {
    /// The last seq of each list.
    Seqs(Vec<Seq>),
    /// The mark was already there; nothing allocated.
    Seen,
    /// Over the rate; nothing allocated. Milliseconds until a send would fit.
    Limited(i64),
}

#[derive(Debug, Clone)]
pub struct SeqAllocator {
    redis: Redis,
    pool: MySqlPool,
    scripts: Arc<Scripts>,
    block: i64,
    metrics: Arc<Metrics>,
    /// Block reservations for cold lists, shared by concurrent allocations: a cold start or a
    /// Redis flush makes every active list seed at once, and each seed is a MySQL commit.
    seeder: Arc<Batcher<Vec<SeedKey>, Result<Vec<i64>>>>,
    /// Deadline of a reservation's MySQL statement.
    deadline: Duration,
}

impl SeqAllocator {
    pub fn new(
        redis: Redis,
        pool: MySqlPool,
        scripts: Arc<Scripts>,
        block: i64,
        metrics: Arc<Metrics>,
        deadline: Duration,
    ) -> Self {
        let seeder = Arc::new(db::batcher(
            "seeds",
            &pool,
            &metrics,
            deadline,
            db::BATCH_CONCURRENCY,
            move |pool, reqs| seed_batch(pool, block, reqs),
        ));
        Self {
            redis,
            pool,
            scripts,
            block,
            metrics,
            seeder,
            deadline,
        }
    }

    /// Allocates `n` seqs in each list; returns the *last* seq of each (the first is last - n + 1).
    /// Lists must be distinct.
    pub async fn alloc(&self, lists: &[(ListId, i64)]) -> Result<Vec<Seq>> {
        match self.alloc_inner(lists, None).await? {
            Alloc::Seqs(v) => Ok(v),
            _ => unreachable!("only a gate stops an allocation"),
        }
    }

    /// [`Self::alloc`] behind a gate, in the same Redis script as the allocation in
    /// `lists[gate.with]` (the sender's list, whose slot the gate's keys share): the sender's
    /// rate limit, so a refused send costs no extra round trip and allocates nothing; then the
    /// request mark, set if absent. [`Alloc::Seen`] when the mark was already there: the request
    /// may be a retry, and the caller looks for its first result before allocating. A first send
    /// thus costs no MySQL read to rule out a retry.
    pub async fn alloc_gated(&self, lists: &[(ListId, i64)], gate: Gate<'_>) -> Result<Alloc> {
        self.alloc_inner(lists, Some(gate)).await
    }

    /// The rate check of a send that allocates nothing in the sender's slot (a large group's
    /// list, a non-persistent send): one script of its own. Milliseconds to wait when over it.
    pub async fn check_rate(&self, rate: &Rate) -> Result<Option<i64>> {
        let mut inv = self.scripts.gate.prepare_invoke();
        inv.key(&rate.key)
            .arg(rate.interval_us)
            .arg(rate.tolerance_us)
            .arg(0);
        let r: Vec<i64> = self.redis.script(inv).await?;
        Ok((r.first() == Some(&-3)).then(|| r.get(1).copied().unwrap_or(1)))
    }

    async fn alloc_inner(
        &self,
        lists: &[(ListId, i64)],
        mut gate: Option<Gate<'_>>,
    ) -> Result<Alloc> {
        let mut out = vec![0i64; lists.len()];
        let mut pending: Vec<usize> = (0..lists.len()).collect();
        for _attempt in 0..4 {
            if pending.is_empty() {
                break;
            }
            // The gate goes with the first attempt only; re-seeded counters retry without it.
            let res = match gate.take() {
                Some(g) => match self.run_alloc_gated(lists, &pending, g).await? {
                    Ok(res) => res,
                    Err(stop) => return Ok(stop),
                },
                None => self.run_alloc(lists, &pending).await?,
            };
            let mut missing = Vec::new();
            let mut over = Vec::new();
            for (&i, (cur, hw)) in pending.iter().zip(res) {
                if cur < 0 {
                    missing.push(i);
                } else {
                    out[i] = cur;
                    if cur > hw {
                        over.push(i);
                    }
                }
            }
            if !over.is_empty() {
                db::deadline(self.deadline, self.reserve(lists, &over, &out)).await?;
            }
            if !missing.is_empty() {
                self.seed(lists, &missing).await?;
            }
            pending = missing;
        }
        if !pending.is_empty() {
            return Err(Error::Internal(
                "seq counter vanished repeatedly while seeding".into(),
            ));
        }
        Ok(Alloc::Seqs(out.into_iter().map(Seq).collect()))
    }

    /// [`Self::run_alloc`] with the gate checked in the script of the slot group holding
    /// `lists[gate.with]`. That group runs first; the others (only on a cluster) run once it
    /// passed, so a refused or seen send allocates nothing anywhere.
    async fn run_alloc_gated(
        &self,
        lists: &[(ListId, i64)],
        idx: &[usize],
        gate: Gate<'_>,
    ) -> Result<std::result::Result<Vec<(i64, i64)>, Alloc>> {
        let (first, rest): (Vec<Vec<usize>>, Vec<Vec<usize>>) = self
            .by_slot(lists, idx)
            .into_iter()
            .partition(|g| g.contains(&gate.with));
        let first = first.into_iter().next().unwrap_or_default();
        let mut inv = self.scripts.alloc_gated.prepare_invoke();
        match &gate.rate {
            Some(r) => inv.key(&r.key).arg(r.interval_us).arg(r.tolerance_us),
            None => inv.arg(0).arg(0),
        };
        match gate.mark {
            Some(m) => inv.key(m).arg(MARK_TTL_SECS),
            None => inv.arg(0),
        };
        for &i in &first {
            inv.key(lists[i].0.key()).arg(lists[i].1);
        }
        let r: Vec<i64> = self.redis.script(inv).await?;
        match r[..] {
            [-2] => return Ok(Err(Alloc::Seen)),
            [-3, ms] => return Ok(Err(Alloc::Limited(ms.max(1)))),
            _ => {}
        }
        let mut by_index = BTreeMap::new();
        for (j, &i) in first.iter().enumerate() {
            by_index.insert(i, (r[2 * j], r[2 * j + 1]));
        }
        let rest: Vec<usize> = rest.into_iter().flatten().collect();
        if !rest.is_empty() {
            for (&i, v) in rest.iter().zip(self.run_alloc(lists, &rest).await?) {
                by_index.insert(i, v);
            }
        }
        Ok(Ok(idx.iter().map(|i| by_index[i]).collect()))
    }

    /// Groups `idx` by cluster slot (one group on a single server) and runs the alloc script per
    /// group concurrently. Returns (cur, hw) in `idx` order.
    async fn run_alloc(&self, lists: &[(ListId, i64)], idx: &[usize]) -> Result<Vec<(i64, i64)>> {
        let groups = self.by_slot(lists, idx);
        let calls = groups.iter().map(|g| {
            let mut inv = self.scripts.alloc.prepare_invoke();
            for &i in g {
                inv.key(lists[i].0.key()).arg(lists[i].1);
            }
            async move { self.redis.script::<Vec<i64>>(inv).await }
        });
        let results = futures::future::try_join_all(calls).await?;
        let mut by_index = BTreeMap::new();
        for (g, r) in groups.iter().zip(results) {
            for (j, &i) in g.iter().enumerate() {
                by_index.insert(i, (r[2 * j], r[2 * j + 1]));
            }
        }
        Ok(idx.iter().map(|i| by_index[i]).collect())
    }

    fn by_slot(&self, lists: &[(ListId, i64)], idx: &[usize]) -> Vec<Vec<usize>> {
        if !self.redis.is_cluster() {
            return vec![idx.to_vec()];
        }
        let mut m: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for &i in idx {
            m.entry(slot(&lists[i].0.key())).or_default().push(i);
        }
        m.into_values().collect()
    }

    /// Counters that passed their high-water mark: raise MySQL's max_seq (one statement for the
    /// batch) so the seqs just handed out are covered, then raise `hw` in Redis.
    async fn reserve(&self, lists: &[(ListId, i64)], over: &[usize], cur: &[i64]) -> Result<()> {
        // In key order: two concurrent reservations lock their rows in one order.
        let mut over = over.to_vec();
        over.sort_unstable_by_key(|&i| lists[i].0.parts());
        let over = &over[..];
        // Idempotent (GREATEST): a deadlock victim simply runs again.
        db::retry_deadlock("seq reserve", || {
            let mut qb = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO seq_block (app_id, object_type, object_id, max_seq) ",
            );
            qb.push_values(over, |mut b, &i| {
                let (a, t, o) = lists[i].0.parts();
                b.push_bind(a)
                    .push_bind(t)
                    .push_bind(o)
                    .push_bind(cur[i] + self.block);
            });
            qb.push(" ON DUPLICATE KEY UPDATE max_seq = GREATEST(max_seq, VALUES(max_seq))");
            async move {
                qb.build()
                    .persistent(over.len() <= 4)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        })
        .await?;
        self.metrics.seq_reservations.inc_by(over.len() as u64);
        for g in self.by_slot(lists, over) {
            let mut inv = self.scripts.raise.prepare_invoke();
            for &i in &g {
                inv.key(lists[i].0.key()).arg(cur[i] + self.block);
            }
            self.redis.script::<i64>(inv).await?;
        }
        Ok(())
    }

    /// Counters Redis does not have: reserve a block above MySQL's max_seq that no other process
    /// can get (max_seq += block), and seed the counter at its start. The reservation goes
    /// through [`Self::seeder`]: concurrent allocations share one transaction.
    async fn seed(&self, lists: &[(ListId, i64)], missing: &[usize]) -> Result<()> {
        let keys: Vec<SeedKey> = missing.iter().map(|&i| lists[i].0.parts()).collect();
        let hws = self.seeder.try_call(keys, "seq seeder").await?;
        let seeds: BTreeMap<usize, (i64, i64)> = missing
            .iter()
            .zip(hws)
            .map(|(&i, hw)| (i, (hw - self.block, hw)))
            .collect();
        self.metrics.seq_reseeds.inc_by(missing.len() as u64);
        for g in self.by_slot(lists, missing) {
            let mut inv = self.scripts.seed.prepare_invoke();
            for &i in &g {
                let (base, hw) = seeds[&i];
                inv.key(lists[i].0.key()).arg(base).arg(hw);
            }
            self.redis.script::<i64>(inv).await?;
        }
        Ok(())
    }
}

/// Reserves one block per key for a batch of seeding requests: one transaction for all of them
/// (a key asked for twice gets one block, which both then seed: the Redis seed only creates a
/// missing counter, so neither reuses a seq). When that fails, each request on its own, so each
/// gets its own error. Returns each request's new `max_seq` per key, in its order.
async fn seed_batch(pool: MySqlPool, block: i64, reqs: Vec<Vec<SeedKey>>) -> Vec<Result<Vec<i64>>> {
    let pick = |hw: &BTreeMap<SeedKey, i64>, keys: &[SeedKey]| -> Result<Vec<i64>> {
        keys.iter()
            .map(|k| {
                hw.get(k).copied().ok_or_else(|| {
                    Error::Internal(format!("seq_block row {k:?} not found after upsert"))
                })
            })
            .collect()
    };
    if reqs.len() > 1 {
        let all: Vec<SeedKey> = reqs.iter().flatten().copied().collect();
        if let Ok(hw) = db::retry_deadlock("seq seed", || reserve_blocks(&pool, block, &all)).await
        {
            return reqs.iter().map(|keys| pick(&hw, keys)).collect();
        }
    }
    let mut out = Vec::with_capacity(reqs.len());
    for keys in &reqs {
        out.push(
            db::retry_deadlock("seq seed", || reserve_blocks(&pool, block, keys))
                .await
                .and_then(|hw| pick(&hw, keys)),
        );
    }
    out
}

/// One transaction: per (app, kind), one multi-row upsert adding a block to each distinct key
/// (keys in order, so concurrent reservations lock rows in one order) and one locking read of
/// the results: a first message into a cold group of 200 members commits (and flushes the log)
/// once, not once per member.
async fn reserve_blocks(
    pool: &MySqlPool,
    block: i64,
    keys: &[SeedKey],
) -> Result<BTreeMap<SeedKey, i64>> {
    let mut by_kind: BTreeMap<(i64, i8), std::collections::BTreeSet<i64>> = BTreeMap::new();
    for &(a, t, o) in keys {
        by_kind.entry((a, t)).or_default().insert(o);
    }
    let mut hws = BTreeMap::new();
    let mut tx = pool.begin().await?;
    for ((a, t), objs) in by_kind {
        let objs: Vec<i64> = objs.into_iter().collect();
        for chunk in objs.chunks(SEED_CHUNK) {
            let mut up = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "INSERT INTO seq_block (app_id, object_type, object_id, max_seq) ",
            );
            up.push_values(chunk, |mut b, &o| {
                b.push_bind(a).push_bind(t).push_bind(o).push_bind(block);
            });
            up.push(" ON DUPLICATE KEY UPDATE max_seq = max_seq + ");
            up.push_bind(block);
            up.build().execute(&mut *tx).await?;
            // The rows are locked by the upsert: this reads this transaction's own values.
            let mut read = sqlx::QueryBuilder::<sqlx::MySql>::new(
                "SELECT object_id, max_seq FROM seq_block WHERE app_id = ",
            );
            read.push_bind(a)
                .push(" AND object_type = ")
                .push_bind(t)
                .push(" AND object_id");
            db::push_in(&mut read, chunk.iter().copied());
            read.push(" FOR UPDATE");
            let rows: Vec<(i64, i64)> = read.build_query_as().fetch_all(&mut *tx).await?;
            hws.extend(rows.into_iter().map(|(o, hw)| ((a, t, o), hw)));
        }
    }
    tx.commit().await?;
    Ok(hws)
}

/// Lists per seeding upsert (4 placeholders a row, 65 535 a statement).
const SEED_CHUNK: usize = 4000;
