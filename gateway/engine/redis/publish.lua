-- Publish into a channel's stream and pub/sub atomically (after Centrifugo's
-- broker_history_add_stream.lua).
-- KEYS: 1 stream, 2 meta hash (e=epoch, s=top offset), 3 idempotent result key
-- ARGV: 1 payload, 2 history size (0 = no history), 3 stream ttl ms, 4 meta ttl ms (0 = keep),
--       5 epoch for a new stream, 6 pub/sub channel, 7 result ttl ms (0 = no idempotency key)
-- Returns {offset, epoch, repeated (0|1)}.
local payload = ARGV[1]
local size = tonumber(ARGV[2])
local result_ttl = tonumber(ARGV[7])

if result_ttl > 0 then
  local stored = redis.call("get", KEYS[3])
  if stored then
    local sep = string.find(stored, ":", 1, true)
    return {tonumber(string.sub(stored, 1, sep - 1)), string.sub(stored, sep + 1), 1}
  end
end

local offset = 0
local epoch = ""
if size > 0 then
  epoch = redis.call("hget", KEYS[2], "e")
  if not epoch then
    epoch = ARGV[5]
    redis.call("hset", KEYS[2], "e", epoch)
  end
  offset = redis.call("hincrby", KEYS[2], "s", 1)
  local meta_ttl = tonumber(ARGV[4])
  if meta_ttl > 0 then
    redis.call("pexpire", KEYS[2], meta_ttl)
  end
  if offset == 1 then
    -- A new position: drop whatever an expired meta left behind, or XADD would refuse the id.
    redis.call("del", KEYS[1])
  end
  -- The id is the offset (read as <offset>-0), so XRANGE by offset needs no lookup table.
  redis.call("xadd", KEYS[1], "MAXLEN", "=", size, offset, "d", payload)
  redis.call("pexpire", KEYS[1], ARGV[3])
end

-- Lua 5.1 numbers are doubles: ".." prints integers exactly up to 1e14, far beyond any offset.
redis.call("publish", ARGV[6], "__p1:" .. offset .. ":" .. epoch .. "__" .. payload)
if result_ttl > 0 then
  redis.call("set", KEYS[3], offset .. ":" .. epoch, "PX", result_ttl)
end
return {offset, epoch, 0}
