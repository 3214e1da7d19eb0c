-- A reviewer's decision: in force (replacing the entry's earlier one), its entry out of the queue, and
-- appended to the audit, which nothing ever trims or rewrites. Every replica is told to read the overlay.
-- KEYS[1]: entries, KEYS[2]: rank, KEYS[3]: age, KEYS[4]: decisions in force, KEYS[5]: the audit (list),
-- KEYS[6]: counts (see review_note.lua).
-- ARGV: the entry id, the decision (JSON), the invalidation channel, the message that names the overlay.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBY', KEYS[6], cjson.decode(raw).kind, -1)
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[5], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return redis.call('LLEN', KEYS[5])
