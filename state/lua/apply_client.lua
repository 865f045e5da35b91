-- Apply one batch of heartbeats of one client to its client-day aggregates, atomically.
--
-- KEYS[3d-2..3d]  the d-th day's aggregate hash, users key, and its month's device-users hash
--                  (one client: one slot)
-- ARGV[1]          exact-users limit: a day's users stay an exact set up to this many
-- ARGV[2]          number of days D
-- then per day:    expire_at (unix s), day of the month (1-31), device count K, and K times:
--                  device id, event count E, and E times: partition, offset, count, user ('' =
--                  nobody)
--
-- The aggregate hash holds 'n' (the client's activity that day), one field per device (its
-- activity that day, for rankings: a device appears once it has activity), 'h' (1 once the
-- day's users are a HyperLogLog) and 'o<p>' (the highest offset of partition p applied to it).
-- The users key holds the client's users of the day, across its devices: a user on two devices
-- is one user. The month's device-users hash maps '<device>:<user>' to a bitmap of the days of
-- the month that user was on that device (bit d-1 for day d): a device's distinct users over any
-- range are the pairs whose bitmaps meet the range's days, read from a few month keys instead
-- of a union per device-day (rank_users.lua). Both are kept exactly as a device-day's are (lib_days.lua), with the same
-- effectively-once rule: an event at or below the stored offset of its partition was counted
-- already (a replay) and is skipped; events of one array message share an offset, so the
-- comparison is against the value stored before this call. The writer sends this script only
-- for devices that belong to the client (apply_device.lua accepted them).
-- Returns {applied, skipped}.
-- Runs after lib_days.lua (add_users), which state/scripts.py puts in front of it.
local exact_limit = tonumber(ARGV[1])

-- Set this day's bit in each pair's bitmap (integers below 2^31: exact as Lua doubles).
local function mark_days(month, pair_list, bit, expire_at)
  local wrote = false
  for first = 1, #pair_list, 1000 do  -- in chunks: unpack() is limited by the C stack
    local last = math.min(first + 999, #pair_list)
    local found = redis.call('HMGET', month, unpack(pair_list, first, last))
    local write = {}
    for i = first, last do
      local days = tonumber(found[i - first + 1] or '0')
      if math.floor(days / bit) % 2 == 0 then
        write[#write + 1] = pair_list[i]
        write[#write + 1] = string.format('%d', days + bit)
      end
    end
    if #write > 0 then
      redis.call('HSET', month, unpack(write))
      wrote = true
    end
  end
  -- The month lives as long as its latest day: EXPIREAT NX for a new key, GT after.
  if wrote and redis.call('EXPIREAT', month, expire_at, 'NX') == 0 then
    redis.call('EXPIREAT', month, expire_at, 'GT')
  end
end

local applied, skipped = 0, 0
local a = 3
for d = 1, tonumber(ARGV[2]) do
  local aggregate, users, month = KEYS[3 * d - 2], KEYS[3 * d - 1], KEYS[3 * d]
  local expire_at, devices = tonumber(ARGV[a]), tonumber(ARGV[a + 2])
  local bit = 2 ^ (tonumber(ARGV[a + 1]) - 1)
  a = a + 3
  -- First pass: the fields to read (count, sketch flag, each partition's offset, each device).
  local fields, slot, device_at = {'n', 'h'}, {}, {}
  local b = a
  for _ = 1, devices do
    local device, events = ARGV[b], tonumber(ARGV[b + 1])
    fields[#fields + 1] = device
    device_at[device] = #fields
    b = b + 2
    for e = 0, events - 1 do
      local field = 'o' .. ARGV[b + 4 * e]
      if slot[field] == nil then
        fields[#fields + 1] = field
        slot[field] = #fields
      end
    end
    b = b + 4 * events
  end
  local found = hmget_all(aggregate, fields)
  local stored, newest = {}, {}
  for field, i in pairs(slot) do
    stored[field] = tonumber(found[i] or '-1')
    newest[field] = stored[field]
  end
  -- Second pass: what is new, per device.
  local total, write, names, day_applied = 0, {}, {}, 0
  local pairs_seen, pair_list = {}, {}
  for _ = 1, devices do
    local device, events = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    local add = 0
    for _ = 1, events do
      local field, offset = 'o' .. ARGV[a], tonumber(ARGV[a + 1])
      if offset > stored[field] then
        add = add + tonumber(ARGV[a + 2])
        local user = ARGV[a + 3]
        if user ~= '' then
          names[#names + 1] = user
          local pair = device .. ':' .. user
          if not pairs_seen[pair] then
            pairs_seen[pair] = true
            pair_list[#pair_list + 1] = pair
          end
        end
        if offset > newest[field] then newest[field] = offset end
        day_applied = day_applied + 1
      else
        skipped = skipped + 1
      end
      a = a + 4
    end
    if add > 0 then
      write[#write + 1] = device
      write[#write + 1] = string.format('%d', tonumber(found[device_at[device]] or '0') + add)
      total = total + add
    end
  end
  if day_applied > 0 then
    write[#write + 1] = 'n'
    write[#write + 1] = string.format('%d', tonumber(found[1] or '0') + total)
    for field, offset in pairs(newest) do
      if offset > stored[field] then
        write[#write + 1] = field
        write[#write + 1] = offset
      end
    end
    hset_all(aggregate, write)
    if not found[1] then  -- a new day
      redis.call('EXPIREAT', aggregate, expire_at)
    end
    if #names > 0 then
      add_users(aggregate, users, names, not found[1], found[2], expire_at, exact_limit)
      mark_days(month, pair_list, bit, expire_at)
    end
    applied = applied + day_applied
  end
end
return {applied, skipped}
