-- Distinct users per bucket of a device's days, from its month hashes (apply_device.lua).
-- KEYS[1]: a scratch key of the device's slot; KEYS[2..M+1]: the month keys of the range.
-- ARGV: as read_device_counts.lua. Returns one integer per bucket.
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

local POPCOUNT = {}
for byte = 0, 255 do
  local n, v = 0, byte
  while v > 0 do
    n = n + v % 2
    v = math.floor(v / 2)
  end
  POPCOUNT[byte] = n
end

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

local function members_of(bitmap, dictionary)
  local out = {}
  for at = 1, #bitmap do
    local byte, i = string.byte(bitmap, at), (at - 1) * 8
    while byte > 0 do
      if byte % 2 == 1 then out[#out + 1] = dictionary[i + 1] end
      byte = math.floor(byte / 2)
      i = i + 1
    end
  end
  return out
end

-- Each day of the range: {bits, month} (a dictionary month), {set = key}, {sketch = key}, or
-- false (nobody).
local days, dictionaries = {}, {}
for m = 1, month_count do
  local first, count = tonumber(ARGV[2 * m]), tonumber(ARGV[2 * m + 1])
  local fields = {'w', 'u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7'}
  for d = first, first + count - 1 do
    fields[#fields + 1] = d .. 'u'
    fields[#fields + 1] = d .. 'h'
  end
  local found = redis.call('HMGET', KEYS[1 + m], unpack(fields))
  local wide = found[1] ~= false
  if not wide then
    local dictionary = {}
    for f = 2, 9 do
      local part = found[f]
      if part then
        for at = 1, #part, 8 do dictionary[#dictionary + 1] = string.sub(part, at, at + 7) end
      end
    end
    dictionaries[m] = dictionary
  end
  for i = 0, count - 1 do
    local day = false
    if wide then
      local key = KEYS[1 + m] .. string.format('-%02d:u', first + i)
      if found[11 + 2 * i] then
        day = {sketch = key}
      else
        day = {set = key}
      end
    elseif found[10 + 2 * i] then
      day = {bits = found[10 + 2 * i], month = m}
    end
    days[#days + 1] = day
  end
end

local function one_day(day)
  if not day then return 0 end
  if day.bits then return popcount(day.bits) end
  if day.set then return redis.call('SCARD', day.set) end
  return redis.call('PFCOUNT', day.sketch)
end

local function several_days(first, last)
  local sketches, month, bits, same_month = {}, nil, '', true
  for k = first, last do
    local day = days[k]
    if day then
      if day.sketch then sketches[#sketches + 1] = day.sketch end
      if not day.bits or (month ~= nil and month ~= day.month) then
        same_month = false
      elseif same_month then
        month = day.month
        bits = bitmap_or(bits, day.bits)
      end
    end
  end
  if same_month then return popcount(bits) end
  -- The users themselves: each day's, from its dictionary or its set. A set holds decimal
  -- hashes, a dictionary 8-byte ones: where both meet, the dictionary's are turned decimal.
  local decimal = #sketches > 0
  for k = first, last do
    if days[k] and days[k].set then decimal = true end
  end
  local users = {}
  for k = first, last do
    local day = days[k]
    if day and day.bits then
      local list = members_of(day.bits, dictionaries[day.month])
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
for b = 2 * month_count + 2, #ARGV do
  local last = first + tonumber(ARGV[b]) - 1
  out[#out + 1] = (last == first) and one_day(days[first]) or several_days(first, last)
  first = last + 1
end
return out
