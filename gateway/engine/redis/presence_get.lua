-- Every live client's packed info, after purging expired entries (as Centrifugo does).
-- KEYS: 1 data hash, 2 expire zset; ARGV: 1 now ms
-- Returns a flat {client, info, ...} list.
local expired = redis.call("zrangebyscore", KEYS[2], "-inf", ARGV[1])
if #expired > 0 then
  for i = 1, #expired do
    redis.call("hdel", KEYS[1], expired[i])
  end
  redis.call("zremrangebyscore", KEYS[2], "-inf", ARGV[1])
end
return redis.call("hgetall", KEYS[1])
