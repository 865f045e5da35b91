-- Add one batch of one client's heartbeats to its fleet aggregates, atomically (state/fleet.py
-- packs the call, already summed per device: the work here is per device, not per heartbeat).
--
-- KEYS[1]          the client's device index: hash device id -> its index, 0, 1, 2, ...
-- KEYS[3d-1..3d+1] the d-th day's aggregate hash, users key and activity vector
-- then KEYS[...]   each month's device-users hash, after the days (one client: one slot)
-- ARGV[1]          exact-users limit: a day's users stay an exact set up to this many
-- ARGV[2]          number of devices K, then their K ids (the call refers to them by position,
--                  from 1)
-- then             number of days D, and per day:
--                    expire_at (unix s), segment count S, and S times: partition, lowest and
--                    highest offset of the segment's heartbeats, device count G, and G times:
--                    device position, activity;
--                    user count U, and U user hashes (decimal): the day's users
-- then             number of months M, and per month: expire_at (its latest day's), device
--                  count G, and G times: device position, record count R, and R records of 12
--                  bytes: the user's 64-bit hash (8 bytes) and the days of the month this batch
--                  saw them on that device (bit d-1 for day d, 4 bytes little-endian)
--
-- Keys: the day's aggregate hash holds 'n' (the client's activity), 'h' (1 once the day's users
-- are a HyperLogLog) and 'o<p>' (the highest offset of partition p counted in it). The users key
-- holds the day's users across the devices, kept as a device-day's are (lib_days.lua): a user
-- on two devices is one user. The activity vector is a string of signed 64-bit integers, the
-- day's activity of the device of index i at BITFIELD offset #i: a ranking reads one string per
-- day, whatever the fleet's size. The month's device-users hash maps a device index to its
-- records (as above): the users of that device in the month with their days, so a device's
-- distinct users over any range are read from a few month keys.
--
-- Effectively-once: activity is a sum, so it keeps the rule of the device scripts. A segment
-- whose lowest offset is above the day's stored offset of its partition is new and counted; one
-- whose highest offset is at or below it was counted already (a replay) and is skipped; one in
-- between is not decided here: the day's activity is left untouched and the day's number
-- returned, and the writer sends that day again cut into one segment per offset. Users are a
-- set and day bits a union: adding them again changes nothing, so they need no rule.
-- Returns the numbers (1-based) of the days sent back for finer segments.
-- Runs after lib_days.lua (hmget_all, hset_all, add_users), which state/scripts.py puts first.
local exact_limit = tonumber(ARGV[1])
local device_count = tonumber(ARGV[2])
local ids = {}
for i = 1, device_count do ids[i] = ARGV[2 + i] end

-- Each device's index in the client's vectors: new devices get the next ones.
local index = hmget_all(KEYS[1], ids)
local assigned, next_index = {}, nil
for i = 1, device_count do
  if not index[i] then
    next_index = next_index or redis.call('HLEN', KEYS[1])
    index[i] = next_index
    assigned[#assigned + 1] = ids[i]
    assigned[#assigned + 1] = next_index
    next_index = next_index + 1
  end
end
if #assigned > 0 then hset_all(KEYS[1], assigned) end

local retry = {}
local a = 3 + device_count
local day_count = tonumber(ARGV[a])
a = a + 1
for d = 1, day_count do
  local aggregate, users, vector = KEYS[3 * d - 1], KEYS[3 * d], KEYS[3 * d + 1]
  local expire_at, segments = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  -- First pass: the partitions' offset fields to read.
  local fields, slot = {'n', 'h'}, {}
  local b = a
  for _ = 1, segments do
    local field = 'o' .. ARGV[b]
    if slot[field] == nil then
      fields[#fields + 1] = field
      slot[field] = #fields
    end
    b = b + 4 + 2 * tonumber(ARGV[b + 3])
  end
  local found = redis.call('HMGET', aggregate, unpack(fields))
  local stored, newest = {}, {}
  for field, i in pairs(slot) do
    stored[field] = tonumber(found[i] or '-1')
    newest[field] = stored[field]
  end
  -- Second pass: which segments are new; their activity per device.
  local adds, order, total, undecided = {}, {}, 0, false
  for _ = 1, segments do
    local field = 'o' .. ARGV[a]
    local low, high, groups = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    a = a + 4
    if low > stored[field] then
      if high > newest[field] then newest[field] = high end
      for g = 0, groups - 1 do
        local device, activity = tonumber(ARGV[a + 2 * g]), tonumber(ARGV[a + 2 * g + 1])
        if adds[device] == nil then
          adds[device] = 0
          order[#order + 1] = device
        end
        adds[device] = adds[device] + activity
        total = total + activity
      end
    elseif high > stored[field] then
      undecided = true
    end
    a = a + 2 * groups
  end
  local new_day = not found[1]
  if undecided then
    retry[#retry + 1] = d
  elseif #order > 0 then
    -- Counts stay exact as Lua doubles up to 2^53; '%d' prints them without an exponent.
    local write = {'n', string.format('%d', tonumber(found[1] or '0') + total)}
    for field, offset in pairs(newest) do
      if offset > stored[field] then
        write[#write + 1] = field
        write[#write + 1] = string.format('%d', offset)
      end
    end
    redis.call('HSET', aggregate, unpack(write))
    if new_day then redis.call('EXPIREAT', aggregate, expire_at) end
    local increments = {}
    for _, device in ipairs(order) do
      if adds[device] > 0 then
        increments[#increments + 1] = 'INCRBY'
        increments[#increments + 1] = 'i64'
        increments[#increments + 1] = '#' .. index[device]
        increments[#increments + 1] = string.format('%d', adds[device])
      end
    end
    for first = 1, #increments, 1000 do  -- in chunks: unpack() is limited by the C stack
      redis.call('BITFIELD', vector, unpack(increments, first, math.min(first + 999, #increments)))
    end
    if #increments > 0 then redis.call('EXPIREAT', vector, expire_at) end
  end
  local user_count = tonumber(ARGV[a])
  if user_count > 0 then
    local names = {}
    for u = 1, user_count do names[u] = ARGV[a + u] end
    -- A day whose activity waits for finer segments: its users go in now all the same.
    add_users(aggregate, users, names, new_day, found[2], expire_at, exact_limit)
  end
  a = a + 1 + user_count
end

-- The position of a 12-byte record of ``user`` in ``records`` (found only at record starts).
local function record_at(records, user)
  local at = string.find(records, user, 1, true)
  while at and (at - 1) % 12 ~= 0 do
    at = string.find(records, user, at + 1, true)
  end
  return at
end

local month_count = tonumber(ARGV[a])
a = a + 1
for m = 1, month_count do
  local month = KEYS[1 + 3 * day_count + m]
  local expire_at, groups = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local fields, b = {}, a
  for g = 1, groups do
    fields[g] = index[tonumber(ARGV[b])]
    b = b + 2 + tonumber(ARGV[b + 1])
  end
  local found = hmget_all(month, fields)
  local write = {}
  for g = 1, groups do
    local records, count, changed = found[g] or '', tonumber(ARGV[a + 1]), false
    a = a + 2
    for r = 0, count - 1 do
      local record = ARGV[a + r]
      local user = string.sub(record, 1, 8)
      local at = record_at(records, user)
      if at == nil then
        records = records .. record
        changed = true
      else
        local days = struct.unpack('<I4', records, at + 8)
        local union = bit.bor(days, (struct.unpack('<I4', record, 9)))
        if union ~= days then
          records = string.sub(records, 1, at + 7) .. struct.pack('<I4', union)
            .. string.sub(records, at + 12)
          changed = true
        end
      end
    end
    a = a + count
    if changed then
      write[#write + 1] = fields[g]
      write[#write + 1] = records
    end
  end
  if #write > 0 then
    hset_all(month, write)
    -- The month lives as long as its latest day: EXPIREAT NX for a new key, GT after.
    if redis.call('EXPIREAT', month, expire_at, 'NX') == 0 then
      redis.call('EXPIREAT', month, expire_at, 'GT')
    end
  end
end
return retry
