-- One report into a user's reports, unless that item of that decision is already reported; the hash
-- expires with the decision records, and past its cap the oldest report goes.
-- KEYS[1]: the user's reports hash. ARGV: the report's field (decision and item), the encoded report,
-- the cap, the retention in seconds.
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[3]) then
  local entries = redis.call('HGETALL', KEYS[1])
  local oldest_field, oldest_at = nil, nil
  for i = 1, #entries, 2 do
    local at = cjson.decode(entries[i + 1])['t']
    if oldest_at == nil or at < oldest_at then
      oldest_field, oldest_at = entries[i], at
    end
  end
  redis.call('HDEL', KEYS[1], oldest_field)
end
return 1
