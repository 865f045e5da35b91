-- Writing a device-month (its layout: apply_device.lua), shared by apply_device.lua and
-- migrate_month.lua: state/scripts.py puts this file, after lib_days.lua, in front of them.
local DICTIONARY_LIMIT = 64
local PER_FIELD = 8
local FIELDS = {'w', 'u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7'}

local function bit_set(bitmap, i)
  local at = math.floor(i / 8) + 1
  if #bitmap < at then bitmap = bitmap .. string.rep('\0', at - #bitmap) end
  local byte = string.byte(bitmap, at)
  local flag = 2 ^ (i % 8)
  if byte % (2 * flag) >= flag then return bitmap end
  return string.sub(bitmap, 1, at - 1) .. string.char(byte + flag) .. string.sub(bitmap, at + 1)
end

-- Each user of a bitmap, in decimal, as the dictionary ``members`` names them.
local function bitmap_members(bitmap, members)
  local out = {}
  for n, i in ipairs(bitmap_places(bitmap)) do out[n] = to_decimal(members[i + 1]) end
  return out
end

local function day_users_key(month_key, dom)
  return month_key .. string.format('-%02d:u', tonumber(dom))
end

-- Add names (8-byte hashes) to a wide month's day users key, in the sets' decimal form: an
-- exact set, then a HyperLogLog past the limit, flagged by the month's '<d>h'.
local function add_wide(month_key, dom, names, sketch, expire_at, exact_limit)
  local decimal = {}
  for i, name in ipairs(names) do decimal[i] = to_decimal(name) end
  add_users(month_key, dom .. 'h', day_users_key(month_key, dom), decimal, false, sketch,
            expire_at, exact_limit)
end

-- The month outgrew its dictionary: every day's bitmap becomes that day's users set.
local function widen(month_key, members, expire_at)
  local all = redis.call('HGETALL', month_key)
  local gone = {'u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7'}
  for i = 1, #all, 2 do
    local dom = string.match(all[i], '^(%d+)u$')
    if dom then
      local users = day_users_key(month_key, dom)
      each_chunk('SADD', users, bitmap_members(all[i + 1], members))
      redis.call('EXPIREAT', users, expire_at)
      gone[#gone + 1] = all[i]
    end
  end
  redis.call('HDEL', month_key, unpack(gone))
end

-- Add days to a device-month: ``list`` holds, per day, its day of the month 'dom', the
-- activity 'add' and the user hashes 'names' (8 bytes each) it adds, or 'sketch' = true for a
-- day whose users key is a HyperLogLog already. With ``force_wide`` the month turns wide first.
-- Returns whether the month is wide, and whether its key may be new.
local function apply_month(month_key, expire_at, list, exact_limit, force_wide)
  local fields = {unpack(FIELDS)}
  for _, day in ipairs(list) do
    fields[#fields + 1] = day.dom
    fields[#fields + 1] = day.dom .. 'u'
    fields[#fields + 1] = day.dom .. 'h'
  end
  local month = redis.call('HMGET', month_key, unpack(fields))
  local wide = month[1] ~= false
  local members, index = {}, {}
  for f = 2, 9 do
    local part = month[f]
    if part then
      for at = 1, #part, 8 do
        local member = string.sub(part, at, at + 7)
        members[#members + 1] = member
        index[member] = #members - 1
      end
    end
  end
  local new_key = not wide and #members == 0
  local newcomers = {}
  if force_wide and not wide then
    widen(month_key, members, expire_at)
    wide = true
    redis.call('HSET', month_key, 'w', '1')
  end
  if not wide then
    for _, day in ipairs(list) do
      for _, name in ipairs(day.names) do
        if index[name] == nil and newcomers[name] == nil then
          newcomers[name] = true
          newcomers[#newcomers + 1] = name
        end
      end
    end
    if #members + #newcomers > DICTIONARY_LIMIT then
      widen(month_key, members, expire_at)
      wide = true
      redis.call('HSET', month_key, 'w', '1')
    end
  end
  local write = {}
  if not wide and #newcomers > 0 then
    local first_changed = math.floor(#members / PER_FIELD)
    for _, name in ipairs(newcomers) do
      members[#members + 1] = name
      index[name] = #members - 1
    end
    for f = first_changed, math.floor((#members - 1) / PER_FIELD) do
      write[#write + 1] = 'u' .. f
      write[#write + 1] = table.concat(members, '', f * PER_FIELD + 1,
                                       math.min(#members, (f + 1) * PER_FIELD))
    end
  end
  for j, day in ipairs(list) do
    local count, bitmap, sketch = month[7 + 3 * j], month[8 + 3 * j], month[9 + 3 * j]
    if count then new_key = false end
    -- Counts stay exact as Lua doubles up to 2^53 (a day would need 9e9 heartbeats at the
    -- largest count to get there); '%d' prints them without an exponent.
    write[#write + 1] = day.dom
    write[#write + 1] = string.format('%d', tonumber(count or '0') + day.add)
    if day.sketch then  -- a day kept as a HyperLogLog already (devact migrate)
      write[#write + 1] = day.dom .. 'h'
      write[#write + 1] = '1'
    elseif #day.names > 0 then
      if wide then
        add_wide(month_key, day.dom, day.names, sketch, expire_at, exact_limit)
      else
        local bits = bitmap or ''
        for _, name in ipairs(day.names) do bits = bit_set(bits, index[name]) end
        if bits ~= bitmap then
          write[#write + 1] = day.dom .. 'u'
          write[#write + 1] = bits
        end
      end
    end
  end
  redis.call('HSET', month_key, unpack(write))
  -- A month key's expiry never changes: set when the key is new (NX: it may be new without
  -- this script knowing, when its first days had neither users nor dictionary).
  if new_key then redis.call('EXPIREAT', month_key, expire_at, 'NX') end
  return wide, new_key
end
