-- PUBLISH through a script so a Redis Cluster pipeline can route it: plain PUBLISH names no
-- key, and a cluster pipeline needs one. PUBLISH itself is broadcast cluster-wide.
-- KEYS: 1 any key (routing only); ARGV: 1 pub/sub channel, 2 message
return redis.call("publish", ARGV[1], ARGV[2])
