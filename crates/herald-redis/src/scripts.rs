//! The Lua scripts that make each engine step atomic in Redis.
//!
//! Keys of one channel share the hash tag `{channel}`, so every script touches one slot.
//! Times come from Redis's own clock (`TIME`), so nodes with skewed clocks agree on expiry.

/// Milliseconds on Redis's clock, as a Lua local `now`.
macro_rules! now_ms {
    () => {
        "local tm = redis.call('TIME')\nlocal now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"
    };
}

/// Ensures the channel's epoch exists (creating it, and dropping any stale stream and latest
/// state, when it does not), drops expired history from the head of the stream, and refreshes
/// the meta TTL, unless the channel keeps latest state (whose publish set the meta's TTL to
/// outlive it). Leaves `e` (epoch) and `t` (top offset) as Lua locals.
macro_rules! channel_state {
    () => {
        r#"
local e = redis.call('HGET', KEYS[1], 'e')
local t
if not e then
  e = ARGV[1]
  t = 0
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'e', e, 't', 0)
else
  t = tonumber(redis.call('HGET', KEYS[1], 't'))
end
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
for _ = 1, 1000 do
  local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #head == 0 or tonumber(head[1][2][8]) > now then break end
  redis.call('XDEL', KEYS[2], head[1][1])
end
"#
    };
}

/// The publish step itself (after `channel_state!`): assign the offset, append to the
/// stream, keep latest state and deliver over pub/sub. See [`PUBLISH`] for KEYS and ARGV.
macro_rules! publish_body {
    () => {
        r#"
t = redis.call('HINCRBY', KEYS[1], 't', 1)
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, t .. '-0',
    'e', ARGV[5], 'd', ARGV[6], 'c', now, 'x', now + tonumber(ARGV[4]))
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local mode = ARGV[9]
if mode ~= '' then
  local lttl = tonumber(ARGV[10])
  local expiry = 0
  if lttl > 0 then expiry = now + lttl end
  if mode == 'last' then
    redis.call('DEL', KEYS[3])
  elseif redis.call('HEXISTS', KEYS[3], ARGV[5]) == 0 and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[11]) then
    -- A new name beyond the bound replaces the one published longest ago.
    local oldest, lowest = nil, nil
    local all = redis.call('HGETALL', KEYS[3])
    for i = 1, #all, 2 do
      local off = tonumber(string.match(all[i + 1], '^(%d+)'))
      if not lowest or off < lowest then oldest, lowest = all[i], off end
    end
    if oldest then redis.call('HDEL', KEYS[3], oldest) end
  end
  redis.call('HSET', KEYS[3], ARGV[5], t .. ' ' .. now .. ' ' .. expiry .. '\n' .. ARGV[6])
  if lttl > 0 then
    local keep = math.max(lttl, tonumber(ARGV[2]))
    redis.call('PEXPIRE', KEYS[3], lttl)
    redis.call('PEXPIRE', KEYS[1], keep)
  else
    redis.call('PERSIST', KEYS[3])
    redis.call('PERSIST', KEYS[1])
  end
end
redis.call(ARGV[8], ARGV[7], 'P ' .. e .. ' ' .. t .. ' ' .. now .. ' ' .. ARGV[5] .. '\n' .. ARGV[6])
"#
    };
}

/// Publish: assign the next offset, append to history and deliver over pub/sub in one step.
/// For a worker's stream entry, its id is recorded in the channel's dedupe set in the same
/// step, and an id already recorded is not published again.
///
/// The channel's latest state (`latest_state`) is a hash, one field per event name (one field
/// in all for `last`), each `offset time expiry` and a newline before the data; `expiry` 0
/// keeps it until replaced. While it exists the meta hash lives as long as it does.
///
/// KEYS: meta, stream, latest, [dedupe set]
/// ARGV: new epoch, state ttl ms, history size, history ttl ms, event, data, pub/sub channel,
///       publish command (PUBLISH or SPUBLISH), latest mode ("", "last" or "per_event"),
///       latest ttl ms (0: until replaced), most event names kept, [entry id, dedupe window ms]
/// Returns `{epoch, offset, time}`, or `{}` when the entry was already published.
pub(crate) const PUBLISH: &str = concat!(
    now_ms!(),
    r#"
if KEYS[4] then
  if redis.call('ZADD', KEYS[4], 'NX', now, ARGV[12]) == 0 then return {} end
  local window = tonumber(ARGV[13])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  redis.call('PEXPIRE', KEYS[4], window)
end
"#,
    channel_state!(),
    publish_body!(),
    "return {e, t, now}\n"
);

/// Publish at most once per idempotency key: [`PUBLISH`] without the dedupe set, checking and
/// recording the key in the same step, so a repeat sent to any node is caught.
///
/// KEYS: meta, stream, latest, the key's record (`{channel}:o:KEY`)
/// ARGV: as [`PUBLISH`] up to the most event names kept, then the digest of the event and
///       payload, and how long the key is remembered (ms)
/// Returns `{epoch, offset, time}`, or `{'=', "EPOCH OFFSET TIME DIGEST"}` for a repeat.
pub(crate) const PUBLISH_ONCE: &str = concat!(
    now_ms!(),
    r#"
local seen = redis.call('GET', KEYS[4])
if seen then return {'=', seen} end
"#,
    channel_state!(),
    publish_body!(),
    r#"
redis.call('SET', KEYS[4], e .. ' ' .. t .. ' ' .. now .. ' ' .. ARGV[12], 'PX', ARGV[13])
return {e, t, now}
"#
);

/// Read the channel's latest state.
///
/// KEYS: meta, stream, latest
/// ARGV: new epoch, state ttl ms
/// Returns `{epoch, top, [event, value, ...]}` with the values not yet expired.
pub(crate) const READ_LATEST: &str = concat!(
    now_ms!(),
    channel_state!(),
    r#"
local out = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local expiry = tonumber(string.match(all[i + 1], '^%d+ %d+ (%d+)'))
  if expiry == 0 or expiry > now then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return {e, t, out}
"#
);

/// Counts a channel among those keeping latest state, unless that would pass the bound.
///
/// KEYS: the node-wide zset of channels keeping latest state (score: when their state expires)
/// ARGV: channel, expiry ms (or "+inf"), bound
/// Returns 1 when counted (or already), 0 when the bound is reached.
pub(crate) const LATEST_COUNT: &str = concat!(
    now_ms!(),
    r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"#
);

/// Read history.
///
/// KEYS: meta, stream, latest
/// ARGV: new epoch, state ttl ms, since offset (or "" for the newest), limit
/// Returns `{epoch, top, oldest offset kept (top + 1 when none), entries}`; entries as
/// returned by XRANGE, oldest first.
pub(crate) const READ: &str = concat!(
    now_ms!(),
    channel_state!(),
    r#"
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = t + 1
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
local limit = tonumber(ARGV[4])
local entries = {}
if limit > 0 then
  if ARGV[3] == '' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
    local n = #entries
    for i = 1, math.floor(n / 2) do
      entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
    end
  else
    entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[3] .. '-0', '+', 'COUNT', limit)
  end
end
return {e, t, oldest, entries}
"#
);

/// Join or refresh a presence member.
///
/// KEYS: lease zset, member hash
/// ARGV: conn id, member JSON, lease ms
pub(crate) const PRESENCE_JOIN: &str = concat!(
    now_ms!(),
    r#"
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease * 2)
redis.call('PEXPIRE', KEYS[2], lease * 2)
return 1
"#
);

/// List presence members whose lease has not expired.
///
/// KEYS: lease zset, member hash
/// Returns the member JSON strings.
pub(crate) const PRESENCE_MEMBERS: &str = concat!(
    now_ms!(),
    r#"
local members = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local m = redis.call('HGET', KEYS[2], id)
  if m then members[#members + 1] = m end
end
return members
"#
);

/// Remove presence members whose lease has expired (their node died without saying
/// goodbye). Only the caller that removed a member gets it back, so each leave is announced
/// once.
///
/// KEYS: lease zset, member hash
/// Returns the removed members' JSON strings.
pub(crate) const PRESENCE_SWEEP: &str = concat!(
    now_ms!(),
    r#"
local gone = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local m = redis.call('HGET', KEYS[2], id)
  if m then gone[#gone + 1] = m end
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return gone
"#
);

/// A script run by its hash, loaded again when Redis forgot it (after a restart).
#[derive(Debug)]
pub(crate) struct Lua(fred::types::scripts::Script);

impl Lua {
    pub(crate) fn new(source: &'static str) -> Self {
        Self(fred::types::scripts::Script::from_lua(source))
    }

    /// Runs the script with `options` (fail-fast and a timeout).
    pub(crate) async fn run(
        &self,
        client: &fred::prelude::Client,
        options: &fred::types::config::Options,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<fred::prelude::Value, fred::error::Error> {
        use fred::interfaces::ClientLike;
        use fred::types::{ClusterHash, CustomCommand};
        let mut argv = Vec::with_capacity(2 + keys.len() + args.len());
        argv.push(self.0.sha1().to_string());
        argv.push(keys.len().to_string());
        argv.extend(keys);
        argv.extend(args);
        // Route by the first key, which names the channel's slot.
        let command = || CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
        let with = client.with_options(options);
        match with.custom(command(), argv.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.0.load(client).await?;
                with.custom(command(), argv).await
            }
            other => other,
        }
    }
}

/// Take a lease when free or renew it when the caller holds it.
///
/// KEYS: lease key. ARGV: holder, ttl ms. Returns 1 while the caller holds it, else 0.
pub(crate) const LEASE_HOLD: &str = r#"
local h = redis.call('GET', KEYS[1])
if not h or h == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Give a lease up when the caller holds it.
///
/// KEYS: lease key. ARGV: holder.
pub(crate) const LEASE_RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;
