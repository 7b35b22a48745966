-- Read a channel's position and publications (Centrifugo's history read over a STREAM).
-- KEYS: 1 stream, 2 meta hash
-- ARGV: 1 epoch for a new stream, 2 meta ttl ms (0 = keep), 3 limit (0 = position only, -1 = all),
--       4 since offset ("" = none), 5 reverse ("1" | "0")
-- Returns {top offset, epoch, {{id, {field, value}}...}}.
local epoch = redis.call("hget", KEYS[2], "e")
if not epoch then
  epoch = ARGV[1]
  redis.call("hset", KEYS[2], "e", epoch)
end
local top = tonumber(redis.call("hget", KEYS[2], "s") or "0")
local meta_ttl = tonumber(ARGV[2])
if meta_ttl > 0 then
  redis.call("pexpire", KEYS[2], meta_ttl)
end
local limit = tonumber(ARGV[3])
if limit == 0 then
  return {top, epoch, {}}
end
local since = ARGV[4]
local pubs
if ARGV[5] == "1" then
  local hi = "+"
  if since ~= "" then
    local before = tonumber(since) - 1
    if before < 1 then
      return {top, epoch, {}}
    end
    hi = string.format("%d-0", before)
  end
  if limit > 0 then
    pubs = redis.call("xrevrange", KEYS[1], hi, "-", "COUNT", limit)
  else
    pubs = redis.call("xrevrange", KEYS[1], hi, "-")
  end
else
  local lo = "-"
  if since ~= "" then
    lo = string.format("%d-0", tonumber(since) + 1)
  end
  if limit > 0 then
    pubs = redis.call("xrange", KEYS[1], lo, "+", "COUNT", limit)
  else
    pubs = redis.call("xrange", KEYS[1], lo, "+")
  end
end
return {top, epoch, pubs}
