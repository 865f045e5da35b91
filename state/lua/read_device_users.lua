-- Distinct users per bucket of a device's days, from its month hashes (apply_device.lua).
-- KEYS[1]: a scratch key of the device's slot, the only key declared: the caller then needs the
-- right to write it alone, not the months it reads (state/acl.py; they share its slot).
-- ARGV[1]: the number of months M; then per month its first day in the range and the number of
-- the range's days in it, as read_device_counts.lua; then the M month keys of the range, in
-- order; then the number of days of each bucket, in order. Returns one integer per bucket.
-- Runs after lib_days.lua (each_chunk, to_decimal), which state/scripts.py puts first.
--
-- A user active on several days of a bucket counts once. A month's days name its users by bits
-- of one dictionary, so the days of one month are counted by OR-ing their bitmaps; across
-- months the users themselves are collected. A wide month's days keep their own users keys (an
-- exact set, or a HyperLogLog past the limit); when some day of a bucket is a HyperLogLog, the
-- bucket is estimated: the sketches merge into the scratch key, every other day's users are
-- added to it, and it is counted and deleted within this script.
local scratch = KEYS[1]
local month_count = tonumber(ARGV[1])

local POPCOUNT = {[0] = 0}
for byte = 1, 255 do POPCOUNT[byte] = POPCOUNT[math.floor(byte / 2)] + byte % 2 end

local function popcount(bitmap)
  local n = 0
  for at = 1, #bitmap do n = n + POPCOUNT[string.byte(bitmap, at)] end
  return n
end

local function bitmap_or(x, y)
  if #x < #y then x, y = y, x end
  local out = {}
  for at = 1, #x do
    local p, q = string.byte(x, at), string.byte(y, at) or 0
    local r, flag = 0, 1
    while p > 0 or q > 0 do
      if p % 2 == 1 or q % 2 == 1 then r = r + flag end
      p, q, flag = math.floor(p / 2), math.floor(q / 2), flag * 2
    end
    out[at] = string.char(r)
  end
  return table.concat(out)
end

-- Each day of the range: its bitmap (a string, in a dictionary month, whose position is in
-- month_of), {set = key}, {sketch = key}, or false (nobody).
local days, month_of = {}, {}
-- Per dictionary month, its fields, and once a bucket needs its users, its dictionary.
local month_fields, dictionaries = {}, {}

-- A month's dictionary: its users' 8-byte hashes, in order.
local function dictionary_of(m)
  if dictionaries[m] == nil then
    local out = {}
    for f = 0, 7 do
      local part = month_fields[m]['u' .. f]
      if part then
        for at = 1, #part, 8 do out[#out + 1] = string.sub(part, at, at + 7) end
      end
    end
    dictionaries[m] = out
  end
  return dictionaries[m]
end

local function members_of(bitmap, dictionary)
  local out = {}
  for n, i in ipairs(bitmap_places(bitmap)) do out[n] = dictionary[i + 1] end
  return out
end

-- A month's whole hash in one HGETALL: a listpack is searched end to end for each field an
-- HMGET names, so one pass over it costs less than naming two fields a day.
for m = 1, month_count do
  local first, count = tonumber(ARGV[2 * m]), tonumber(ARGV[2 * m + 1])
  local month_key = ARGV[2 * month_count + 1 + m]
  local all = redis.call('HGETALL', month_key)
  local fields = {}
  for i = 1, #all, 2 do fields[all[i]] = all[i + 1] end
  local wide = fields.w ~= nil
  if not wide then month_fields[m] = fields end
  for d = first, first + count - 1 do
    local day = false
    if not wide then
      local bits = fields[d .. 'u']
      if bits then
        day = bits
        month_of[#days + 1] = m
      end
    elseif fields[d .. 'h'] then
      day = {sketch = month_key .. string.format('-%02d:u', d)}
    elseif fields[tostring(d)] then
      day = {set = month_key .. string.format('-%02d:u', d)}
    end
    days[#days + 1] = day
  end
end

local function one_day(day)
  if not day then return 0 end
  if type(day) == 'string' then return popcount(day) end
  if day.set then return redis.call('SCARD', day.set) end
  return redis.call('PFCOUNT', day.sketch)
end

local function several_days(first, last)
  local sketches, month, bits, same_month = {}, nil, '', true
  for k = first, last do
    local day = days[k]
    if type(day) == 'string' then
      if month ~= nil and month ~= month_of[k] then
        same_month = false
      elseif same_month then
        month = month_of[k]
        bits = bitmap_or(bits, day)
      end
    elseif day then
      same_month = false
      if day.sketch then sketches[#sketches + 1] = day.sketch end
    end
  end
  if same_month then return popcount(bits) end
  -- The users themselves: each day's, from its dictionary or its set. A set holds decimal
  -- hashes, a dictionary 8-byte ones: where both meet, the dictionary's are turned decimal.
  local decimal = #sketches > 0
  for k = first, last do
    if type(days[k]) == 'table' and days[k].set then decimal = true end
  end
  local users = {}
  for k = first, last do
    local day = days[k]
    if type(day) == 'string' then
      local list = members_of(day, dictionary_of(month_of[k]))
      if decimal then
        for i, user in ipairs(list) do list[i] = to_decimal(user) end
      end
      users[#users + 1] = list
    elseif day and day.set then
      users[#users + 1] = redis.call('SMEMBERS', day.set)
    end
  end
  if #sketches > 0 then
    redis.call('DEL', scratch)
    redis.call('PFMERGE', scratch, unpack(sketches))
    for _, list in ipairs(users) do each_chunk('PFADD', scratch, list) end
    local count = redis.call('PFCOUNT', scratch)
    redis.call('DEL', scratch)
    return count
  end
  local seen, count = {}, 0
  for _, list in ipairs(users) do
    for _, user in ipairs(list) do
      if not seen[user] then
        seen[user] = true
        count = count + 1
      end
    end
  end
  return count
end

local out, first = {}, 1
for b = 3 * month_count + 2, #ARGV do
  local last = first + tonumber(ARGV[b]) - 1
  out[#out + 1] = (last == first) and one_day(days[first]) or several_days(first, last)
  first = last + 1
end
return out
