-- Apply one batch of heartbeats of one device (of one client) atomically.
--
-- KEYS[1]          device meta hash (owner client)
-- KEYS[2d], [2d+1] day counter hash and day users key of the d-th day
-- ARGV[1]          client id claiming the device
-- ARGV[2]          exact-users limit: a day's users stay an exact set up to this many
-- ARGV[3]          number of days D
-- then per day:    expire_at (unix s), event count E, and E times: partition, offset, count, user
--                  (user: the 64-bit hash of the user id as a decimal string, '' = nobody)
--
-- Users of a day: a SET of user hashes (exact; Redis keeps it as a compact intset) until the day
-- outgrows the limit, then a HyperLogLog of the same hashes (within ~1%). The key's TYPE says which.
--
-- Effectively-once: each day hash remembers, per Kafka partition, the highest offset applied to
-- it ("o<p>"). An event at or below that offset was already counted (a replay after a crash or a
-- rebalance) and is skipped. Events of one JSON-array message share an offset, which is why the
-- comparison is against the value stored before this call, not a running maximum.
--
-- Returns {1, applied, skipped} or, when the device belongs to another client, {0, owner}.
local owner = redis.call('HGET', KEYS[1], 'client')
if owner and owner ~= ARGV[1] then
  return {0, owner}
end
if not owner then
  redis.call('HSET', KEYS[1], 'client', ARGV[1])
end

local exact_limit = tonumber(ARGV[2])

-- Add user hashes to a day's users key, turning the exact set into a sketch when it outgrows
-- the limit. Hashes stay strings: Lua numbers are doubles and would lose 64-bit precision.
local function add_users(key, names)
  if #names == 0 then return end
  local kind = redis.call('TYPE', key)['ok']
  local command = (kind == 'string') and 'PFADD' or 'SADD'
  -- In chunks: Lua's unpack() is limited by the C stack (~8000 values).
  for first = 1, #names, 1000 do
    redis.call(command, key, unpack(names, first, math.min(first + 999, #names)))
  end
  if command == 'SADD' and redis.call('SCARD', key) > exact_limit then
    local members = redis.call('SMEMBERS', key)
    redis.call('DEL', key)
    for first = 1, #members, 1000 do
      redis.call('PFADD', key, unpack(members, first, math.min(first + 999, #members)))
    end
  end
end

local applied, skipped, device_expire = 0, 0, 0
local a = 4
for d = 1, tonumber(ARGV[3]) do
  local counter, users = KEYS[2 * d], KEYS[2 * d + 1]
  local expire_at, events = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local stored, newest = {}, {}
  local add, names = 0, {}
  for _ = 1, events do
    local field, offset = 'o' .. ARGV[a], tonumber(ARGV[a + 1])
    if stored[field] == nil then
      stored[field] = tonumber(redis.call('HGET', counter, field) or '-1')
      newest[field] = stored[field]
    end
    if offset > stored[field] then
      add = add + tonumber(ARGV[a + 2])
      if ARGV[a + 3] ~= '' then names[#names + 1] = ARGV[a + 3] end
      if offset > newest[field] then newest[field] = offset end
      applied = applied + 1
    else
      skipped = skipped + 1
    end
    a = a + 4
  end
  redis.call('HINCRBY', counter, 'n', add)
  for field, offset in pairs(newest) do
    redis.call('HSET', counter, field, offset)
  end
  add_users(users, names)
  redis.call('EXPIREAT', counter, expire_at)
  if #names > 0 then redis.call('EXPIREAT', users, expire_at) end
  if expire_at > device_expire then device_expire = expire_at end
end

-- The owner record lives as long as the device's newest day (EXPIRETIME is -1 without expiry).
local current = redis.call('EXPIRETIME', KEYS[1])
if current < device_expire then
  redis.call('EXPIREAT', KEYS[1], device_expire)
end
return {1, applied, skipped}
