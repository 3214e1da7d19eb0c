-- Erase everything kept about one user: controls, decision records and reports (one hash slot), and remember
-- until when: a record made before that moment and written later (queued on any replica) is refused
-- by record.lua, for as long as a record is kept at all.
-- KEYS[1] the controls hash, KEYS[2] the decision records list, KEYS[3] the erase marker, KEYS[4] the reports
-- ARGV[1] invalidation channel, ARGV[2] invalidation message (the user),
-- ARGV[3] the moment of the erase (epoch seconds), ARGV[4] the records' retention in seconds
redis.call("DEL", KEYS[1], KEYS[2], KEYS[4])
redis.call("SET", KEYS[3], ARGV[3], "EX", ARGV[4])
redis.call("PUBLISH", ARGV[1], ARGV[2])
return 1
