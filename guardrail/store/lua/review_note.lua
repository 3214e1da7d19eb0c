-- Sightings for the review queue, one call each (pipelined in batches): the entry is made or counted.
-- Something already decided stays out of the queue, but for a new report of an item whose reports were
-- dismissed. A full queue drops the entry seen least often, the oldest of those, and counts the drop.
-- KEYS[1]: entries (hash id -> JSON), KEYS[2]: rank (zset id -> count + last_seen / 1e10),
-- KEYS[3]: age (zset id -> first_seen), KEYS[4]: decisions in force (hash id -> JSON),
-- KEYS[5]: counts (hash kind -> entries; "dropped" -> entries dropped).
-- ARGV: id, kind, subject, route, item, reason, title ("" for none), when (epoch seconds), the most
-- entries, the most examples, the most routes.
local id, kind = ARGV[1], ARGV[2]
local at = tonumber(ARGV[8])
local decided = redis.call('HGET', KEYS[4], id)
if decided then
  if kind ~= 'reported_item' or cjson.decode(decided).decision ~= 'dismiss' then
    return 0
  end
end
local raw = redis.call('HGET', KEYS[1], id)
local entry
if raw then
  entry = cjson.decode(raw)
else
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[9]) then
    local victim = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if victim then
      local gone = cjson.decode(redis.call('HGET', KEYS[1], victim))
      redis.call('HDEL', KEYS[1], victim)
      redis.call('ZREM', KEYS[2], victim)
      redis.call('ZREM', KEYS[3], victim)
      redis.call('HINCRBY', KEYS[5], gone.kind, -1)
      redis.call('HINCRBY', KEYS[5], 'dropped', 1)
    end
  end
  entry = {id = id, kind = kind, subject = ARGV[3], count = 0, first_seen = at, last_seen = at,
           examples = {}, routes = {}, reasons = {}}
  redis.call('HINCRBY', KEYS[5], kind, 1)
  redis.call('ZADD', KEYS[3], at, id)
end
local function add(list, value, most)
  if value == '' or #list >= most then return end
  for _, seen in ipairs(list) do
    if seen == value then return end
  end
  list[#list + 1] = value
end
entry.count = entry.count + 1
if at > entry.last_seen then entry.last_seen = at end
add(entry.examples, ARGV[5], tonumber(ARGV[10]))
add(entry.routes, ARGV[4], tonumber(ARGV[11]))
if ARGV[6] ~= '' then entry.reasons[ARGV[6]] = (entry.reasons[ARGV[6]] or 0) + 1 end
if ARGV[7] ~= '' then entry.title = ARGV[7] end
redis.call('HSET', KEYS[1], id, cjson.encode(entry))
redis.call('ZADD', KEYS[2], entry.count + entry.last_seen / 1e10, id)
return 1
