-- One decision record onto a user's list, kept to the newest ARGV[2] and for ARGV[3] seconds.
-- One script call instead of LPUSH + LTRIM + EXPIRE: a third of the client's work per record.
-- KEYS[1]: the user's decision list. ARGV: the encoded record, the cap, the retention in seconds.
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
