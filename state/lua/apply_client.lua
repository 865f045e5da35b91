-- Apply one batch of heartbeats of one client to its client-day aggregates, atomically.
--
-- KEYS[2d-1], [2d] the d-th day's aggregate hash and users key (one client: one slot)
-- ARGV[1]          exact-users limit: a day's users stay an exact set up to this many
-- ARGV[2]          number of days D
-- then per day:    expire_at (unix s), device count K, and K times: device id, event count E,
--                  and E times: partition, offset, count, user ('' = nobody)
--
-- The aggregate hash holds 'n' (the client's activity that day), one field per device (its
-- activity that day, for rankings: a device appears once it has activity), 'h' (1 once the
-- day's users are a HyperLogLog) and 'o<p>' (the highest offset of partition p applied to it).
-- The users key holds the client's users of the day, across its devices: a user on two devices
-- is one user. Both are kept exactly as a device-day's are (lib_days.lua), with the same
-- effectively-once rule: an event at or below the stored offset of its partition was counted
-- already (a replay) and is skipped; events of one array message share an offset, so the
-- comparison is against the value stored before this call. The writer sends this script only
-- for devices that belong to the client (apply_device.lua accepted them).
-- Returns {applied, skipped}.
-- Runs after lib_days.lua (add_users), which state/scripts.py puts in front of it.
local exact_limit = tonumber(ARGV[1])
local applied, skipped = 0, 0
local a = 3
for d = 1, tonumber(ARGV[2]) do
  local aggregate, users = KEYS[2 * d - 1], KEYS[2 * d]
  local expire_at, devices = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
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
  local found = redis.call('HMGET', aggregate, unpack(fields))
  local stored, newest = {}, {}
  for field, i in pairs(slot) do
    stored[field] = tonumber(found[i] or '-1')
    newest[field] = stored[field]
  end
  -- Second pass: what is new, per device.
  local total, write, names, day_applied = 0, {}, {}, 0
  for _ = 1, devices do
    local device, events = ARGV[a], tonumber(ARGV[a + 1])
    a = a + 2
    local add = 0
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
    redis.call('HSET', aggregate, unpack(write))
    if not found[1] then  -- a new day
      redis.call('EXPIREAT', aggregate, expire_at)
    end
    if #names > 0 then
      add_users(aggregate, users, names, not found[1], found[2], expire_at, exact_limit)
    end
    applied = applied + day_applied
  end
end
return {applied, skipped}
