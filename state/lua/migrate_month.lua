-- Move some days of one device-month from the layout before device-months (a hash per day:
-- 'n', 'o<p>', 'h'; its users key beside it) into the device-month hash (apply_device.lua),
-- atomically: what a call moves is deleted from the old layout in the same call, so running
-- `devact migrate` again, or after it stopped half-way, moves nothing twice (state/migrate.py).
--
-- KEYS[1]          the device's meta hash (its offsets move there)
-- KEYS[2]          the device-month hash
-- KEYS[2+d]        the d-th day's old hash
-- ARGV[1]          exact-users limit
-- ARGV[2]          the month key's expire_at (0: none)
-- ARGV[3]          number of days D, then per day: its day of the month, how its users are kept
--                  ('s' an exact set, 'h' a HyperLogLog, 'n' nobody), user count U and U user
--                  hashes (8 bytes each: the set's members, which the caller read)
-- A day's users key has the name a wide month's day users key has: a set that does not fit the
-- month's dictionary, or a HyperLogLog, stays where it is, and the month turns wide.
-- Returns the number of days moved (0 when every day had moved already).
-- Runs after lib_days.lua and lib_months.lua (apply_month), which state/scripts.py puts first.
local exact_limit = tonumber(ARGV[1])
local expire_at = tonumber(ARGV[2])
local list, sets, offsets, force_wide = {}, {}, {}, false
local a = 4
for d = 1, tonumber(ARGV[3]) do
  local dom, kind, count = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local names = {}
  for u = 1, count do names[u] = ARGV[a + 2 + u] end
  a = a + 3 + count
  local fields = redis.call('HGETALL', KEYS[2 + d])
  if #fields > 0 then
    local add = 0
    for i = 1, #fields, 2 do
      local field, value = fields[i], fields[i + 1]
      if field == 'n' then
        add = tonumber(value)
      elseif string.sub(field, 1, 1) == 'o' then
        local offset = tonumber(value)
        if offset > (offsets[field] or -1) then offsets[field] = offset end
      end
    end
    local day = {dom = dom, add = add, names = names}
    if kind == 'h' then
      day.names, day.sketch, force_wide = {}, true, true
    elseif kind == 's' then
      sets[#sets + 1] = KEYS[2 + d] .. ':u'
    end
    list[#list + 1] = day
    redis.call('DEL', KEYS[2 + d])
  end
end
if #list == 0 then return 0 end

local month_expire = expire_at > 0 and expire_at or 253402300799  -- none: the end of year 9999
local wide = apply_month(KEYS[2], month_expire, list, exact_limit, force_wide)
if expire_at == 0 then redis.call('PERSIST', KEYS[2]) end
if not wide and #sets > 0 then redis.call('DEL', unpack(sets)) end

local fields = {}
for field in pairs(offsets) do fields[#fields + 1] = field end
if #fields > 0 then
  local stored = redis.call('HMGET', KEYS[1], unpack(fields))
  local write = {}
  for i, field in ipairs(fields) do
    if offsets[field] > tonumber(stored[i] or '-1') then
      write[#write + 1] = field
      write[#write + 1] = string.format('%d', offsets[field])
    end
  end
  if #write > 0 then redis.call('HSET', KEYS[1], unpack(write)) end
end
if expire_at > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIREAT', KEYS[1], expire_at, 'GT')
end
return #list
