//! Channel history in Redis Streams, and the script that keeps it in step with Pub/Sub.
//!
//! Each channel with history has two keys, in one hash slot (`{channel}`) so
//! both scripts also run on Redis Cluster:
//!
//! - `herald:{CHANNEL}:meta`, a hash with the channel's `epoch` and last `offset`;
//! - `herald:{CHANNEL}:stream`, a stream whose entry ids are `0-OFFSET`, each
//!   with the JSON data `d` and the publish time `t`.
//!
//! (and `herald:{CHANNEL}:idem:KEY` for an idempotency key, expiring with its window).
//!
//! Publishing is one script: it checks the idempotency key, bumps the offset,
//! appends to the stream (trimmed to the channel's size) and publishes the
//! enveloped message. Redis runs a script atomically, so a message is in
//! history exactly when it was published live, and live messages leave in
//! offset order.
//!
//! Every key expires. Each publish gives the stream the messages' TTL and the
//! `meta` hash the much longer position TTL (see [`crate::history`]): a
//! channel idle past its TTL loses its messages, not its position, so a client
//! that missed nothing still recovers.
//!
//! Only publishing writes. Recovery reads: a channel without `meta` answers
//! offset 0 and a one-off epoch, so subscribing to fresh names leaves no key.
//!
//! A `meta` lost while its stream survives (evicted, deleted by hand) would
//! restart offsets at 1, below the stream's top entry, and every `XADD` would
//! fail; so would a `meta` whose offset fell behind its stream. The publish
//! script detects both and starts a new epoch on an empty stream instead: the old messages cannot be recovered by anyone (their
//! epoch is gone), and clients holding positions of the old epoch are told
//! `recovered: false`.

use std::time::Duration;

use bytes::Bytes;
use herald_protocol::envelope::ENVELOPE_PREFIX;
use herald_protocol::{ChannelName, Position};
use redis::Value;
use redis::aio::ConnectionLike;

use crate::history::{Recovery, new_epoch};
use crate::{BrokerError, BusMessage, PublishRequest, Published};

/// The key of a channel's metadata hash.
pub fn meta_key(channel: &ChannelName) -> String {
    format!("herald:{{{channel}}}:meta")
}

/// The key of a channel's history stream.
pub fn stream_key(channel: &ChannelName) -> String {
    format!("herald:{{{channel}}}:stream")
}

fn idempotency_key(channel: &ChannelName, key: &str) -> String {
    format!("herald:{{{channel}}}:idem:{key}")
}

/// KEYS: meta, stream, idempotency key. ARGV: channel, data, size, messages TTL
/// (ms), fresh epoch, idempotency window (ms, 0 = none), envelope prefix,
/// position TTL (ms).
const PUBLISH_SCRIPT: &str = r#"
local meta, stream, idem = KEYS[1], KEYS[2], KEYS[3]
local channel, data = ARGV[1], ARGV[2]
local size, ttl_ms, window_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local position_ttl_ms = tonumber(ARGV[8])
if window_ms > 0 then
  local first = redis.call('GET', idem)
  if first then return {1, first} end
end
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local header, result
if size > 0 then
  -- A new epoch. Messages left of a lost one cannot be told apart from the new
  -- epoch's and would block its offsets: drop them.
  local function new_epoch()
    redis.call('DEL', stream, meta)
    redis.call('HSET', meta, 'epoch', ARGV[5])
    return ARGV[5]
  end
  local epoch = redis.call('HGET', meta, 'epoch') or new_epoch()
  local offset = redis.call('HINCRBY', meta, 'offset', 1)
  local added = redis.pcall('XADD', stream, 'MAXLEN', size, '0-' .. offset, 'd', data, 't', now)
  if type(added) == 'table' and added.err then
    -- The position fell behind its own stream (a meta restored or edited by
    -- hand): its offsets cannot go on, so neither can its epoch.
    epoch = new_epoch()
    offset = redis.call('HINCRBY', meta, 'offset', 1)
    redis.call('XADD', stream, 'MAXLEN', size, '0-' .. offset, 'd', data, 't', now)
  end
  redis.call('PEXPIRE', stream, ttl_ms)
  redis.call('PEXPIRE', meta, position_ttl_ms)
  header = '{"o":' .. offset .. ',"e":"' .. epoch .. '","t":' .. now .. '}'
  result = offset .. ' ' .. epoch .. ' ' .. now
else
  header = '{"t":' .. now .. '}'
  result = '- - ' .. now
end
redis.call('PUBLISH', channel, ARGV[7] .. header .. '\n' .. data)
if window_ms > 0 then redis.call('SET', idem, result, 'PX', window_ms) end
return {0, result}
"#;

/// KEYS: meta, stream. ARGV: a one-off epoch, since offset (or empty), limit, since epoch.
///
/// Writes nothing: a channel without `meta` has no position yet and answers
/// offset 0 in the one-off epoch.
const RECOVER_SCRIPT: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {ARGV[1], 0, {}} end
local top = tonumber(redis.call('HGET', meta, 'offset') or '0')
if ARGV[2] == '' then return {epoch, top, {}} end
local since, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] ~= epoch or since >= top or top - since > limit then return {epoch, top, {}} end
return {epoch, top, redis.call('XRANGE', stream, '0-' .. string.format('%d', since + 1), '0-' .. string.format('%d', top))}
"#;

/// Runs the publish script.
pub async fn publish_json(
    conn: &mut impl ConnectionLike,
    request: PublishRequest<'_>,
) -> Result<Published, BrokerError> {
    let channel = request.channel;
    let (key, window) = request.idempotency.unwrap_or(("", Duration::ZERO));
    let (size, ttl, position_ttl) = request
        .history
        .map_or((0, Duration::ZERO, Duration::ZERO), |h| {
            (h.size, h.messages_ttl(), h.position_ttl())
        });
    let reply: (i64, String) = redis::Script::new(PUBLISH_SCRIPT)
        .key(meta_key(channel))
        .key(stream_key(channel))
        .key(idempotency_key(channel, key))
        .arg(channel.as_str())
        .arg(request.data)
        .arg(size)
        .arg(millis(ttl))
        .arg(new_epoch())
        .arg(if key.is_empty() {
            0
        } else {
            millis(window).max(1)
        })
        .arg(ENVELOPE_PREFIX)
        .arg(millis(position_ttl))
        .invoke_async(conn)
        .await?;
    let (duplicate, result) = reply;
    let mut parts = result.split(' ');
    let (offset, epoch, time) = (parts.next(), parts.next(), parts.next());
    let time_ms = time
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| BrokerError::Unexpected(format!("publish result {result:?}")))?;
    let position = match (offset.and_then(|o| o.parse().ok()), epoch) {
        (Some(offset), Some(epoch)) if epoch != "-" => Some(Position::new(offset, epoch)),
        _ => None,
    };
    Ok(Published {
        position,
        time_ms,
        duplicate: duplicate == 1,
    })
}

/// Whole milliseconds, for `PEXPIRE` and `PX`; history TTLs are bounded far below the cap.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the recovery script and judges what it found.
pub async fn recover(
    conn: &mut impl ConnectionLike,
    channel: &ChannelName,
    since: Option<&Position>,
    limit: usize,
) -> Result<Recovery, BrokerError> {
    let reply: Value = redis::Script::new(RECOVER_SCRIPT)
        .key(meta_key(channel))
        .key(stream_key(channel))
        .arg(new_epoch())
        .arg(since.map_or_else(String::new, |p| p.offset.to_string()))
        .arg(limit)
        .arg(since.map_or("", |p| p.epoch.as_str()))
        .invoke_async(conn)
        .await?;
    let unexpected = || BrokerError::Unexpected(format!("recovery reply for {channel}"));
    let Value::Array(parts) = reply else {
        return Err(unexpected());
    };
    let [epoch, top, entries] = <[Value; 3]>::try_from(parts).map_err(|_| unexpected())?;
    let epoch: String = redis::from_redis_value(epoch).map_err(|_| unexpected())?;
    let top: u64 = redis::from_redis_value(top).map_err(|_| unexpected())?;
    let Value::Array(entries) = entries else {
        return Err(unexpected());
    };
    let mut found = Vec::with_capacity(entries.len());
    for entry in entries {
        found.push(parse_entry(channel, &epoch, entry).ok_or_else(unexpected)?);
    }
    Ok(Recovery::judge(
        Position::new(top, epoch),
        since,
        found,
        limit,
    ))
}

/// One stream entry `[id, [field, value, …]]` as a bus message.
fn parse_entry(channel: &ChannelName, epoch: &str, entry: Value) -> Option<BusMessage> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, fields] = <[Value; 2]>::try_from(parts).ok()?;
    let id: String = redis::from_redis_value(id).ok()?;
    let offset: u64 = id.strip_prefix("0-")?.parse().ok()?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let (mut data, mut time) = (None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let name: String = redis::from_redis_value(name).ok()?;
        let value: Vec<u8> = redis::from_redis_value(value).ok()?;
        match name.as_str() {
            "d" => data = Some(value),
            "t" => time = std::str::from_utf8(&value).ok()?.parse().ok(),
            _ => {}
        }
    }
    Some(BusMessage {
        channel: channel.clone(),
        payload: Bytes::from(data?),
        position: Some(Position::new(offset, epoch)),
        time_ms: time,
        json: true,
    })
}
