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
-- outgrows the limit, then a HyperLogLog of the same hashes (within ~1%). The key's TYPE says which;
-- the counter hash's field 'h' says it too, so that writing needs no TYPE call.
--
-- Effectively-once: each day hash remembers, per Kafka partition, the highest offset applied to
-- it ("o<p>"). An event at or below that offset was already counted (a replay after a crash or a
-- rebalance) and is skipped. Events of one JSON-array message share an offset, which is why the
-- comparison is against the value stored before this call, not a running maximum.
--
-- Few calls on purpose: this script runs once per device of every batch, and each redis.call
-- costs about a microsecond of the server's single thread. A day's fields are read in one HMGET
-- and written in one HSET; expiry is set when a key is created (a day's expire_at never changes).
-- Returns {1, applied, skipped} or, when the device belongs to another client, {0, owner}.
-- Runs after lib_days.lua (add_users), which state/scripts.py puts in front of it.
local owner = redis.call('HGET', KEYS[1], 'client')
if owner and owner ~= ARGV[1] then
  return {0, owner}
end

local exact_limit = tonumber(ARGV[2])

local applied, skipped, new_days_expire, days_expire = 0, 0, 0, 0
local a = 4
for d = 1, tonumber(ARGV[3]) do
  local counter, users = KEYS[2 * d], KEYS[2 * d + 1]
  local expire_at, events = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  if expire_at > days_expire then days_expire = expire_at end
  a = a + 2
  -- The fields to read: the count, the sketch flag, and the offset of each partition present.
  local fields, slot = {'n', 'h'}, {}
  for e = 0, events - 1 do
    local field = 'o' .. ARGV[a + 4 * e]
    if slot[field] == nil then
      fields[#fields + 1] = field
      slot[field] = #fields
    end
  end
  local found = redis.call('HMGET', counter, unpack(fields))
  local stored, newest = {}, {}
  for field, i in pairs(slot) do
    stored[field] = tonumber(found[i] or '-1')
    newest[field] = stored[field]
  end
  local add, names, day_applied = 0, {}, 0
  for _ = 1, events do
    local field, offset = 'o' .. ARGV[a], tonumber(ARGV[a + 1])
    if offset > stored[field] then
      add = add + tonumber(ARGV[a + 2])
      if ARGV[a + 3] ~= '' then names[#names + 1] = ARGV[a + 3] end
      if offset > newest[field] then newest[field] = offset end
      day_applied = day_applied + 1
    else
      skipped = skipped + 1
    end
    a = a + 4
  end
  if day_applied > 0 then
    -- Counts stay exact as Lua doubles up to 2^53 (a day would need 9e9 heartbeats at the
    -- largest count to get there); '%d' prints them without an exponent.
    local write = {'n', string.format('%d', tonumber(found[1] or '0') + add)}
    for field, offset in pairs(newest) do
      if offset > stored[field] then
        write[#write + 1] = field
        write[#write + 1] = offset
      end
    end
    redis.call('HSET', counter, unpack(write))
    if not found[1] then  -- a new day
      redis.call('EXPIREAT', counter, expire_at)
      if expire_at > new_days_expire then new_days_expire = expire_at end
    end
    if #names > 0 then
      add_users(counter, users, names, not found[1], found[2], expire_at, exact_limit)
    end
    applied = applied + day_applied
  end
end

-- The owner record lives as long as the device's newest day.
if not owner then
  redis.call('HSET', KEYS[1], 'client', ARGV[1])
  redis.call('EXPIREAT', KEYS[1], math.max(new_days_expire, days_expire))
elseif new_days_expire > 0 then
  redis.call('EXPIREAT', KEYS[1], new_days_expire, 'GT')
end
return {1, applied, skipped}
