-- Client and distinct-user counts, after purging expired entries. Users are read from the
-- packed ClientInfo (4 big-endian u32 lengths, then user, client, ...), so nothing but two
-- integers crosses the wire however big the channel is.
-- KEYS: 1 data hash, 2 expire zset; ARGV: 1 now ms
-- Returns {num_clients, num_users}.
local expired = redis.call("zrangebyscore", KEYS[2], "-inf", ARGV[1])
if #expired > 0 then
  for i = 1, #expired do
    redis.call("hdel", KEYS[1], expired[i])
  end
  redis.call("zremrangebyscore", KEYS[2], "-inf", ARGV[1])
end
local infos = redis.call("hvals", KEYS[1])
local users = {}
local num_users = 0
for i = 1, #infos do
  local info = infos[i]
  local user = ""
  if #info >= 16 then
    local n = struct.unpack(">I4", info)
    user = string.sub(info, 17, 16 + n)
  end
  if not users[user] then
    users[user] = true
    num_users = num_users + 1
  end
end
return {#infos, num_users}
