//! Redis as logic uses it: the Lua scripts, cluster slots, and the key names only logic uses. The
//! handle is `gim_common::rds::Redis` (every command bounded by `redis.timeout_ms`, so an outage
//! fails calls fast as UNAVAILABLE); the shared key names live in `gim_common::keys`.

use gim_common::{AppId, GroupId, UserId};

/// The one Redis handle (single server or cluster, per-command deadline) is common's.
pub use gim_common::rds::Redis;

/// Seq counter of a user's message list: HASH {cur, hw}. Shares the user's route hash tag.
pub fn user_seq_key(app: AppId, user: UserId) -> String {
    format!("gim:seq:{{{app}:{user}}}")
}

/// "This request was seen" mark of a user's send (`SET NX` with a TTL, see
/// [`crate::messages::seq::SeqAllocator::alloc_marked`]). Shares the sender's hash tag, so it
/// lives in the same cluster slot as the sender's seq counter and one script can touch both.
pub fn request_mark_key(app: AppId, user: UserId, device: i64, request_id: i64) -> String {
    format!("gim:req:{{{app}:{user}}}:{device}:{request_id}")
}

/// A user's send rate state (GCRA's theoretical arrival time, µs). Shares the user's hash tag, so
/// the seq allocation script of the user's own list can check it in the same call.
pub fn send_rate_key(app: AppId, user: UserId) -> String {
    format!("gim:rl:{{{app}:{user}}}:send")
}

/// Seq counter of a large group's message list.
pub fn group_seq_key(app: AppId, group: GroupId) -> String {
    format!("gim:gseq:{{{app}:g{group}}}")
}

/// Cluster hash slot of a key (CRC16/XMODEM of the hash tag, mod 16384), so batched commands can
/// be grouped per slot: a Lua script may only touch keys of one slot on a cluster.
pub fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &b[open + 1..];
        rest.iter()
            .position(|&c| c == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(b)) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Lua scripts. Each touches only its KEYS, all of one slot (callers group keys by [`slot`]).
#[derive(Debug)]
pub struct Scripts {
    /// Allocates `ARGV[i]` seqs from each `KEYS[i]`; returns `[cur, hw]` per key, or `[-1, -1]`
    /// when the key is missing (never seeded, or Redis lost it) so the caller seeds it from MySQL
    /// first: creating it here would restart the list at 1 and reuse seqs.
    pub alloc: redis::Script,
    /// [`Self::alloc`] behind a rate gate and a mark ([`GATE_LUA`]): `{-3, retry_ms}` when over
    /// the rate, `{-2}` when the mark already exists; either allocates nothing. The lists follow
    /// the gate's keys, their counts follow `ARGV[1..3]`.
    pub alloc_gated: redis::Script,
    /// [`GATE_LUA`]'s rate check alone (`KEYS[1]`, `ARGV[1..3]` with no mark): `{0}` or
    /// `{-3, retry_ms}`, for sends that allocate no seq in the sender's slot.
    pub gate: redis::Script,
    /// Seeds `KEYS[i]` with cur = `ARGV[2i-1]`, hw = `ARGV[2i]` if absent; else only raises hw.
    pub seed: redis::Script,
    /// Raises hw of `KEYS[i]` to `ARGV[i]` if the key still exists (a vanished key is re-seeded).
    pub raise: redis::Script,
    /// Route swap at sign-in: HSET field `ARGV[1]` = `ARGV[2]`, returning the previous value.
    pub route_swap: redis::Script,
    /// Conditional route delete at offline: HDEL field `ARGV[1]` only if it equals `ARGV[2]`.
    pub route_del: redis::Script,
}

/// The seq allocation loop over `KEYS[k..]` (HINCRBY cur by `ARGV[i + off]` where hw exists,
/// else -1), after `prelude`, which sets `k` and `off`; returns (cur, hw) pairs.
fn alloc_lua(prelude: &str) -> String {
    format!(
        r#"{prelude}local out = {{}}
for i = k, #KEYS do
  local key = KEYS[i]
  local hw = redis.call('HGET', key, 'hw')
  if not hw then
    out[#out + 1] = -1
    out[#out + 1] = -1
  else
    out[#out + 1] = redis.call('HINCRBY', key, 'cur', tonumber(ARGV[i + off]))
    out[#out + 1] = tonumber(hw)
  end
end
return out
"#
    )
}

/// A send's gate, before any allocation. With `ARGV[1]` (the emission interval, µs) > 0, GCRA on
/// `KEYS[1]`: the key holds the theoretical arrival time (TAT); a send fits when the new TAT is
/// at most `ARGV[2]` (burst × interval) ahead of now, else `{-3, ms until it would}`. GCRA
/// because it is one integer per user and one read-modify-write (no bucket refill timer, no
/// window edge that lets twice the rate through), and Redis's clock is the one clock every logic
/// process shares. With `ARGV[3]` (a TTL) > 0, the next key is a request mark set NX (`{-2}` when
/// already there). Sets `k` (first list key) and `off` (list `i`'s count is `ARGV[i + off]`).
pub const GATE_LUA: &str = r#"local k = 1
local iv = tonumber(ARGV[1])
if iv > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  local over = tat + iv - now - tonumber(ARGV[2])
  if over > 0 then return {-3, math.ceil(over / 1000)} end
  redis.call('SET', KEYS[1], string.format('%d', tat + iv), 'PX', math.ceil((tat + iv - now) / 1000) + 1)
  k = 2
end
if tonumber(ARGV[3]) > 0 then
  if not redis.call('SET', KEYS[k], '1', 'NX', 'EX', tonumber(ARGV[3])) then return {-2} end
  k = k + 1
end
local off = 4 - k
"#;

impl Default for Scripts {
    fn default() -> Self {
        Self {
            alloc: redis::Script::new(&alloc_lua("local k, off = 1, 0\n")),
            alloc_gated: redis::Script::new(&alloc_lua(GATE_LUA)),
            gate: redis::Script::new(&format!("{GATE_LUA}return {{0}}\n")),
            seed: redis::Script::new(
                r#"
for i, k in ipairs(KEYS) do
  local base = tonumber(ARGV[2 * i - 1])
  local hw = tonumber(ARGV[2 * i])
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'cur', base, 'hw', hw)
  else
    local old = tonumber(redis.call('HGET', k, 'hw') or '0')
    if hw > old then redis.call('HSET', k, 'hw', hw) end
  end
end
return 1
"#,
            ),
            raise: redis::Script::new(
                r#"
for i, k in ipairs(KEYS) do
  local old = redis.call('HGET', k, 'hw')
  if old and tonumber(ARGV[i]) > tonumber(old) then
    redis.call('HSET', k, 'hw', ARGV[i])
  end
end
return 1
"#,
            ),
            route_swap: redis::Script::new(
                r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
"#,
            ),
            route_del: redis::Script::new(
                r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_for_known_keys() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("123456789"), 12739);
        // An empty tag hashes the whole key.
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    }

    #[test]
    fn seq_keys_share_the_users_route_slot() {
        let (a, u) = (AppId(3), UserId(9));
        assert_eq!(
            slot(&user_seq_key(a, u)),
            slot(&gim_common::keys::route_key(a, u))
        );
    }
}
