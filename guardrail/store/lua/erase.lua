-- Erase everything kept about one user: controls and decision records (one hash slot).
-- KEYS[1] the controls hash, KEYS[2] the decision records list
-- ARGV[1] invalidation channel, ARGV[2] invalidation message (the user)
redis.call("DEL", KEYS[1], KEYS[2])
redis.call("PUBLISH", ARGV[1], ARGV[2])
return 1
