-- Add one batch of one client's heartbeats to its fleet aggregates, atomically (state/fleet.py
-- packs the call, already summed per device-day: the work here is per device-day, not per
-- heartbeat).
--
-- KEYS[1]          the client's device index: hash device id -> its index, 0, 1, 2, ...
-- KEYS[2]          the client's applied offsets: hash partition -> the highest offset counted
-- KEYS[3d..3d+2]   the d-th day's aggregate hash, users key and activity vector
-- then KEYS[...]   each month's device-users hash, after the days (one client: one slot)
-- ARGV[1]          exact-users limit: a day's users stay an exact set up to this many
-- ARGV[2], ARGV[3] number of devices K, and their ids, 36 characters each (canonical UUIDs),
--                  in one string (the call refers to them by position, from 1)
-- then             number of segments S, and per segment: partition, the lowest and highest
--                  offset of its heartbeats, and their activity: 14 bytes per device-day, the
--                  day's number (2 bytes), the device's position (4) and the activity (8),
--                  little-endian
-- then             number of days D, and per day: expire_at (unix s), user count U, and U user
--                  hashes (decimal): the day's users
-- then             number of months M, and per month: expire_at (its latest day's), device
--                  count G, and G times: device position, and 12 bytes per user of that device
--                  in the month: the user's 64-bit hash (8 bytes, big-endian) and the days of
--                  the month this batch saw them on it (bit d-1 for day d, 4 bytes
--                  little-endian)
--
-- Keys: the day's aggregate hash holds 'n' (the client's activity) and 'h' (1 once the day's
-- users are a HyperLogLog). The users key holds the day's users across the devices, kept as a
-- device-day's are (lib_days.lua): a user on two devices is one user. The activity vector is a
-- string of signed 64-bit integers, the day's activity of the device of index i at BITFIELD
-- offset #i: a ranking reads one string per day, whatever the fleet's size. The month's
-- device-users hash maps a device index to its records, 16 bytes each: the device index (4
-- bytes, little-endian) then a user's 12 bytes as above, one record per user of the device in
-- the month. A device's distinct users over any range are read from a few month keys, and each
-- record names its device, so a reader concatenates the values as they come (HVALS).
--
-- Effectively-once: activity is a sum, so it keeps the device scripts' rule, with the offsets
-- kept once per client (this script is the only writer of its aggregates, and writes them and
-- the offsets together). A segment whose lowest offset is above its partition's stored offset
-- is new and counted; one whose highest offset is at or below it was counted already (a replay)
-- and is skipped; one in between is left undecided, its partition's offset unchanged, and the
-- script answers 1: the writer sends the call again cut into one segment per offset, which
-- decides everything. Users are a set and day bits a union: adding them again changes
-- nothing, so they need no rule.
-- Returns 1 when a segment was left undecided, else 0.
-- Runs after lib_days.lua (hmget_all, hset_all, add_users), which state/scripts.py puts first.
local exact_limit = tonumber(ARGV[1])
local device_count = tonumber(ARGV[2])
local ids = {}
for i = 1, device_count do ids[i] = string.sub(ARGV[3], 36 * i - 35, 36 * i) end

-- A hash of more than a few dozen fields should be a hash table: Redis keeps one of up to 512
-- short fields as a listpack, where each lookup scans the whole list (a batch's 250 devices of
-- a 500-device client took 0.6 ms there). A value longer than 64 bytes makes Redis convert it,
-- for good: the field FILLER holds one, 80 zero bytes, which read as device-users records are
-- five records of no day (so a reader of a month's values need not skip it).
local FILLER = '~'
local FILLER_VALUE = string.rep('\0', 80)

-- Each device's index in the client's vectors: new devices get the next ones.
local index = hmget_all(KEYS[1], ids)
local assigned, next_index = {}, nil
for i = 1, device_count do
  if not index[i] then
    if next_index == nil then
      next_index = redis.call('HLEN', KEYS[1])
      if next_index == 0 then
        redis.call('HSET', KEYS[1], FILLER, FILLER_VALUE)
      else
        next_index = next_index - 1  -- the filler is not a device
      end
    end
    index[i] = next_index
    assigned[#assigned + 1] = ids[i]
    assigned[#assigned + 1] = next_index
    next_index = next_index + 1
  end
end
if #assigned > 0 then hset_all(KEYS[1], assigned) end

-- Segments: which are new, and their activity per day and device.
local a = 4
local segment_count = tonumber(ARGV[a])
a = a + 1
local adds, undecided = {}, 0
if segment_count > 0 then
  local partitions = {}
  for s = 1, segment_count do partitions[s] = ARGV[a + 4 * (s - 1)] end
  local stored = hmget_all(KEYS[2], partitions)
  local newest = {}
  for s = 1, segment_count do
    local partition, low, high = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local groups = ARGV[a + 3]
    a = a + 4
    local before = tonumber(stored[s] or '-1')
    if low > before then
      if high > (newest[partition] or before) then newest[partition] = high end
      for at = 1, #groups, 14 do
        local day, device, activity = struct.unpack('<I2I4i8', groups, at)
        local sums = adds[day]
        if sums == nil then
          sums = {}
          adds[day] = sums
        end
        sums[device] = (sums[device] or 0) + activity
      end
    elseif high > before then
      undecided = 1
    end
  end
  local write = {}
  for partition, offset in pairs(newest) do
    write[#write + 1] = partition
    write[#write + 1] = string.format('%d', offset)
  end
  if #write > 0 then redis.call('HSET', KEYS[2], unpack(write)) end
end

local day_count = tonumber(ARGV[a])
a = a + 1
for d = 1, day_count do
  local aggregate, users, vector = KEYS[3 * d], KEYS[3 * d + 1], KEYS[3 * d + 2]
  local expire_at, user_count = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local sums = adds[d]
  if sums ~= nil or user_count > 0 then
    local found = redis.call('HMGET', aggregate, 'n', 'h')
    if sums ~= nil then
      local total, increments = 0, {}
      for device, activity in pairs(sums) do
        total = total + activity
        if activity > 0 then
          increments[#increments + 1] = 'INCRBY'
          increments[#increments + 1] = 'i64'
          increments[#increments + 1] = '#' .. index[device]
          increments[#increments + 1] = string.format('%d', activity)
        end
      end
      -- Counts stay exact as Lua doubles up to 2^53; '%d' prints them without an exponent.
      redis.call('HSET', aggregate, 'n', string.format('%d', tonumber(found[1] or '0') + total))
      for first = 1, #increments, 1000 do  -- in chunks: unpack() is limited by the C stack
        redis.call('BITFIELD', vector, unpack(increments, first, math.min(first + 999, #increments)))
      end
      -- No activity counted before: the vector was created just now.
      if #increments > 0 and (found[1] or '0') == '0' then
        redis.call('EXPIREAT', vector, expire_at)
      end
    end
    if user_count > 0 then
      local names = {}
      for u = 1, user_count do names[u] = ARGV[a + 1 + u] end
      -- Not "new": a call left undecided may have added users to a day it did not create.
      add_users(aggregate, 'h', users, names, false, found[2], expire_at, exact_limit)
    end
    if not found[1] then redis.call('EXPIREAT', aggregate, expire_at) end
  end
  a = a + 2 + user_count
end

-- Where ``user`` (8 bytes) starts in a device's records, found only where a record holds it.
local function user_at(records, user)
  local at = string.find(records, user, 1, true)
  while at and (at - 1) % 16 ~= 4 do
    at = string.find(records, user, at + 1, true)
  end
  return at
end

local month_count = tonumber(ARGV[a])
a = a + 1
for m = 1, month_count do
  local month = KEYS[2 + 3 * day_count + m]
  local expire_at, groups = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local fields = {}
  for g = 1, groups do fields[g] = index[tonumber(ARGV[a + 2 * (g - 1)])] end
  local found = hmget_all(month, fields)
  local write = {}
  for g = 1, groups do
    local records, added, changed = found[g] or '', ARGV[a + 1], false
    local device = nil
    a = a + 2
    for at = 1, #added, 12 do
      local user = string.sub(added, at, at + 7)
      local place = user_at(records, user)
      if place == nil then
        device = device or struct.pack('<I4', fields[g])
        records = records .. device .. string.sub(added, at, at + 11)
        changed = true
      else
        local days = struct.unpack('<I4', records, place + 8)
        local union = bit.bor(days, (struct.unpack('<I4', added, at + 8)))
        if union ~= days then
          records = string.sub(records, 1, place + 7) .. struct.pack('<I4', union)
            .. string.sub(records, place + 12)
          changed = true
        end
      end
    end
    if changed then
      write[#write + 1] = fields[g]
      write[#write + 1] = records
    end
  end
  if #write > 0 then
    hset_all(month, write)
    -- The month lives as long as its latest day: EXPIREAT NX for a new key, GT after.
    if redis.call('EXPIREAT', month, expire_at, 'NX') == 1 then
      redis.call('HSET', month, FILLER, FILLER_VALUE)
    else
      redis.call('EXPIREAT', month, expire_at, 'GT')
    end
  end
end
return undecided
