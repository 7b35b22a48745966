-- Add or refresh one client's presence (Centrifugo's presence add).
-- KEYS: 1 data hash (client -> packed ClientInfo), 2 expire zset (client -> expire-at ms)
-- ARGV: 1 client id, 2 packed info, 3 expire-at ms, 4 key ttl ms
redis.call("zadd", KEYS[2], ARGV[3], ARGV[1])
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
redis.call("pexpire", KEYS[1], ARGV[4])
redis.call("pexpire", KEYS[2], ARGV[4])
return 1
