-- One decision record onto a user's list, kept to the newest ARGV[2] and for ARGV[3] seconds; not if
-- the user erased their data after it was made (the marker erase.lua leaves).
-- One script call instead of LPUSH + LTRIM + EXPIRE: a third of the client's work per record.
-- KEYS[1]: the user's decision list, KEYS[2]: the user's erase marker.
-- ARGV: the encoded record, the cap, the retention in seconds, when the record was made (epoch seconds).
local erased = redis.call('GET', KEYS[2])
if erased and tonumber(ARGV[4]) <= tonumber(erased) then
  return 0
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
