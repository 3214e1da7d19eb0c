-- Apply a validated controls patch to one user's hash, atomically (docs/architecture.md §6).
-- KEYS[1]  the user's controls hash
-- ARGV[1]  expected revision ("" for no If-Match)
-- ARGV[2]  now, seconds since the epoch
-- ARGV[3]  invalidation channel
-- ARGV[4]  invalidation message (the user)
-- ARGV[5]  deadline, seconds since the epoch: a script that runs later (Redis was hung and the
--          client already reported failure) changes nothing
-- ARGV[6..] triples: op ("set", "del" or "clear"), field (or field prefix for "clear"), value
-- Returns {"stale", revision}, {"late"}, or the hash after the change, as HGETALL does.
local key = KEYS[1]
local clock = redis.call("TIME")
if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > tonumber(ARGV[5]) then
  return {"late"}
end
local revision = tonumber(redis.call("HGET", key, "r") or "0")
if ARGV[1] ~= "" and tonumber(ARGV[1]) ~= revision then
  return {"stale", tostring(revision)}
end
for i = 6, #ARGV, 3 do
  local op, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if op == "set" then
    redis.call("HSET", key, field, value)
  elseif op == "del" then
    redis.call("HDEL", key, field)
  elseif op == "clear" then
    for _, name in ipairs(redis.call("HKEYS", key)) do
      if string.sub(name, 1, #field) == field then
        redis.call("HDEL", key, name)
      end
    end
  end
end
-- Snoozes and a pause that have ended are dropped on every change, so the hash does not grow with them.
local now = tonumber(ARGV[2])
local fields = redis.call("HGETALL", key)
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if string.sub(name, 1, 2) == "m:" and value ~= "" and tonumber(value) <= now then
    redis.call("HDEL", key, name)
  elseif name == "u" and tonumber(value) <= now then
    redis.call("HDEL", key, name)
  end
end
redis.call("HSET", key, "r", revision + 1, "t", ARGV[2])
redis.call("PUBLISH", ARGV[3], ARGV[4])
return redis.call("HGETALL", key)
