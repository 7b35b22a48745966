-- Take a Socket.IO session's recovery state once (gateway.socketio.recovery).
-- The value is "<node id>\n<state>": an empty node id marks a state written when the session
-- dropped; a node id marks a snapshot written while it was connected on that node, which may
-- be taken only once that node is gone (its liveness key expired): a live session is never
-- taken over.
-- KEYS: 1 the session's key; ARGV: 1 the prefix of the nodes' liveness keys
-- Returns the value, false (nothing to take) or 1 (a snapshot held by a live node).
local value = redis.call("get", KEYS[1])
if not value then
  return false
end
local cut = string.find(value, "\n", 1, true)
if not cut then
  redis.call("del", KEYS[1])
  return false
end
if cut > 1 and redis.call("exists", ARGV[1] .. string.sub(value, 1, cut - 1)) == 1 then
  return 1  -- held: the session's node is alive
end
redis.call("del", KEYS[1])
return value
