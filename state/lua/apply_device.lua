-- Apply one batch of heartbeats of one device (of one client) atomically.
--
-- KEYS[1]          device meta hash: 'client' (the owner) and 'o<p>' (offsets, see below)
-- KEYS[1+m]        the m-th month's hash (m = 1..M), in the order of the arguments' months
-- ARGV[1]          client id claiming the device
-- ARGV[2]          exact-users limit: a day's users stay an exact set up to this many
-- ARGV[3]          number of months M, then M times: the month key's expire_at (unix s)
-- then             number of days D, and per day: its month's position m, its day of the month,
--                  heartbeat count E, and E times: partition, offset, count, user (the 64-bit
--                  hash of the user id, 8 bytes big-endian, '' = nobody)
--
-- A device-month is one small hash (Redis keeps it as a listpack: a few bytes a field):
--   '<d>'       activity of day d of the month (d = 1..31, no leading zero)
--   'u0'..'u7'  the month's users, the dictionary: their hashes, 8 bytes each, in order of
--               first activity, at most 8 to a field (so that no value outgrows the 64 bytes
--               of a listpack entry); user i of the month is the i-th of them all, from 0
--   '<d>u'      the users of day d: a bitmap over the dictionary, bit i (byte i // 8, bit
--               i % 8, least significant first) for user i; absent when the day had nobody
--   'w'         '1' once the month has had more than DICTIONARY_LIMIT users: its dictionary
--               and bitmaps are gone, and each day's users are in their own key '<month
--               key>-<dd>:u' (the device's day users key): an exact set of the hashes in
--               decimal (an intset) up to the limit, then a HyperLogLog, as the client's days
--               keep theirs (lib_days.lua); '<d>h' = '1' once day d's is a HyperLogLog
-- A user count is exact in both forms; a shared device has a handful of users, so its month
-- costs the dictionary once and a byte or two a day (docs/key-schema.md has the figures).
--
-- Effectively-once: the meta hash remembers, per Kafka partition, the highest offset applied
-- to the device ('o<p>'). An event at or below it was counted already (a replay after a crash
-- or a rebalance) and is skipped. Events of one JSON-array message share an offset, which is
-- why the comparison is against the value stored before this call, not a running maximum.
--
-- Few calls on purpose: this script runs once per device of every batch, and each redis.call
-- costs about a microsecond of the server's single thread: the meta is read in one HMGET and
-- written in one HSET, and so is each month.
-- Returns {1, applied, skipped} or, when the device belongs to another client, {0, owner}.
-- Runs after lib_days.lua (each_chunk, to_decimal), which state/scripts.py puts in front of it.
local DICTIONARY_LIMIT = 64
local PER_FIELD = 8
local FIELDS = {'w', 'u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7'}

local exact_limit = tonumber(ARGV[2])
local month_count = tonumber(ARGV[3])
local month_expire = {}
for m = 1, month_count do month_expire[m] = tonumber(ARGV[3 + m]) end
local a = 4 + month_count
local day_count = tonumber(ARGV[a])
a = a + 1

-- The offsets to read: one per partition present.
local days = {}
local meta_fields, slot = {'client'}, {}
for d = 1, day_count do
  local events = tonumber(ARGV[a + 2])
  days[d] = {month = tonumber(ARGV[a]), dom = ARGV[a + 1], first = a + 3, events = events}
  for e = 0, events - 1 do
    local field = 'o' .. ARGV[a + 3 + 4 * e]
    if slot[field] == nil then
      meta_fields[#meta_fields + 1] = field
      slot[field] = #meta_fields
    end
  end
  a = a + 3 + 4 * events
end
local found = redis.call('HMGET', KEYS[1], unpack(meta_fields))
local owner = found[1]
if owner and owner ~= ARGV[1] then
  return {0, owner}
end
local stored, newest = {}, {}
for field, i in pairs(slot) do
  stored[field] = tonumber(found[i] or '-1')
  newest[field] = stored[field]
end

-- What each day adds: activity and user names, of the events not applied before.
local applied, skipped = 0, 0
local by_month = {}
for d = 1, day_count do
  local day = days[d]
  local add, names, day_applied, e = 0, {}, 0, day.first
  for _ = 1, day.events do
    local field, offset = 'o' .. ARGV[e], tonumber(ARGV[e + 1])
    if offset > stored[field] then
      add = add + tonumber(ARGV[e + 2])
      if ARGV[e + 3] ~= '' then names[#names + 1] = ARGV[e + 3] end
      if offset > newest[field] then newest[field] = offset end
      day_applied = day_applied + 1
    else
      skipped = skipped + 1
    end
    e = e + 4
  end
  if day_applied > 0 then
    day.add, day.names = add, names
    local list = by_month[day.month]
    if list == nil then
      list = {}
      by_month[day.month] = list
    end
    list[#list + 1] = day
    applied = applied + day_applied
  end
end
if applied == 0 then
  return {1, 0, skipped}
end

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
  for at = 1, #bitmap do
    local byte = string.byte(bitmap, at)
    local i = (at - 1) * 8
    while byte > 0 do
      if byte % 2 == 1 then out[#out + 1] = to_decimal(members[i + 1]) end
      byte = math.floor(byte / 2)
      i = i + 1
    end
  end
  return out
end

local function day_users_key(month_key, dom)
  return month_key .. string.format('-%02d:u', tonumber(dom))
end

-- Add names to a wide month's day users key: an exact set, then a HyperLogLog past the limit.
local function add_wide(month_key, dom, names, sketch, expire_at, write)
  local users = day_users_key(month_key, dom)
  local decimal = {}
  for i, name in ipairs(names) do decimal[i] = to_decimal(name) end
  names = decimal
  if sketch then
    each_chunk('PFADD', users, names)
    return
  end
  local added = each_chunk('SADD', users, names)
  if added == 0 then return end
  local size = redis.call('SCARD', users)
  if size == added then redis.call('EXPIREAT', users, expire_at) end
  if size > exact_limit then
    local members = redis.call('SMEMBERS', users)
    redis.call('DEL', users)
    each_chunk('PFADD', users, members)
    redis.call('EXPIREAT', users, expire_at)
    write[#write + 1] = dom .. 'h'
    write[#write + 1] = '1'
  end
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

local newest_expire = 0
for m, list in pairs(by_month) do
  local month_key, expire_at = KEYS[1 + m], month_expire[m]
  if expire_at > newest_expire then newest_expire = expire_at end
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
    if #day.names > 0 then
      if wide then
        add_wide(month_key, day.dom, day.names, sketch, expire_at, write)
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
end

-- The meta: the owner, the offsets; it lives as long as the device's newest month.
local write = {}
if not owner then
  write[1] = 'client'
  write[2] = ARGV[1]
end
for field, offset in pairs(newest) do
  if offset > stored[field] then
    write[#write + 1] = field
    write[#write + 1] = string.format('%d', offset)
  end
end
redis.call('HSET', KEYS[1], unpack(write))
if not owner then
  redis.call('EXPIREAT', KEYS[1], newest_expire)
else
  redis.call('EXPIREAT', KEYS[1], newest_expire, 'GT')
end
return {1, applied, skipped}
