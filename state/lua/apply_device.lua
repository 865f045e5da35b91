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
-- Runs after lib_days.lua and lib_months.lua (apply_month), which state/scripts.py puts first.
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

local newest_expire, any_new = 0, false
for m, list in pairs(by_month) do
  local expire_at = month_expire[m]
  if expire_at > newest_expire then newest_expire = expire_at end
  local _, new_key = apply_month(KEYS[1 + m], expire_at, list, exact_limit, false)
  any_new = any_new or new_key
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
elseif any_new then
  redis.call('EXPIREAT', KEYS[1], newest_expire, 'GT')
end
return {1, applied, skipped}
