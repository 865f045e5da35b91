-- Helpers shared by the scripts that write days and read device-months (apply_device.lua,
-- apply_client.lua, migrate_month.lua, read_device_users.lua, lib_months.lua):
-- state/scripts.py puts this file in front of each of them.

-- HMGET of any number of fields, in chunks: Lua's unpack() is limited by the C stack.
local function hmget_all(key, fields)
  local found = {}
  for first = 1, #fields, 1000 do
    local part = redis.call('HMGET', key, unpack(fields, first, math.min(first + 999, #fields)))
    for i = 1, #part do found[first + i - 1] = part[i] end
  end
  return found
end

-- HSET of any number of field-value pairs (a flat list), in chunks.
local function hset_all(key, pairs_list)
  for first = 1, #pairs_list, 1000 do
    redis.call('HSET', key, unpack(pairs_list, first, math.min(first + 999, #pairs_list)))
  end
end

local function each_chunk(command, key, names)
  local added = 0
  -- In chunks: Lua's unpack() is limited by the C stack (~8000 values).
  for first = 1, #names, 1000 do
    added = added + redis.call(command, key, unpack(names, first, math.min(first + 999, #names)))
  end
  return added
end

-- Add user hashes to a day's users key, turning the exact set into a sketch when it outgrows
-- the limit, and then setting ``flag_field`` of the hash ``flag_key`` to '1' (its readers and
-- writers learn from it that the key is a HyperLogLog). Hashes stay strings: Lua numbers are
-- doubles and would lose 64-bit precision. A new day has a new users key: it gets its expiry,
-- and needs no SCARD while it is small.
local function add_users(flag_key, flag_field, users, names, new_day, sketch, expire_at,
                         exact_limit)
  if sketch then
    each_chunk('PFADD', users, names)
    return
  end
  local added = each_chunk('SADD', users, names)
  if added == 0 then return end
  local size = added
  if not new_day or added > exact_limit then
    size = redis.call('SCARD', users)
  end
  if new_day or size == added then  -- every member is new: the set was created just now
    redis.call('EXPIREAT', users, expire_at)
  end
  if size > exact_limit then
    local members = redis.call('SMEMBERS', users)
    redis.call('DEL', users)
    each_chunk('PFADD', users, members)
    redis.call('EXPIREAT', users, expire_at)
    redis.call('HSET', flag_key, flag_field, '1')
  end
end

-- The places of a bitmap's set bits, from 0: bit i is bit i % 8 (least significant first) of
-- byte i // 8, as a device-month's day bitmaps hold its users.
local function bitmap_places(bitmap)
  local out = {}
  for at = 1, #bitmap do
    local byte, i = string.byte(bitmap, at), (at - 1) * 8
    while byte > 0 do
      if byte % 2 == 1 then out[#out + 1] = i end
      byte = math.floor(byte / 2)
      i = i + 1
    end
  end
  return out
end


-- A user's 64-bit hash as 8 bytes (big-endian, as a device-month's dictionary holds it) in the
-- decimal form of the users sets (a signed integer: what state/encoding.py's user_member gives),
-- exactly: Lua's numbers are doubles, so the digits are worked out in base 10^7.
local function to_decimal(bytes)
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(bytes, 1, 8)
  local hi = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
  local lo = ((b5 * 256 + b6) * 256 + b7) * 256 + b8
  local sign = ''
  if hi >= 2147483648 then  -- negative: the magnitude is the two's complement
    sign = '-'
    hi, lo = 4294967295 - hi, 4294967296 - lo
    if lo == 4294967296 then hi, lo = hi + 1, 0 end
  end
  local limbs = {hi}  -- base 10^7, least significant first
  local function multiply_add(factor, add)
    local carry = add
    for i = 1, #limbs do
      local v = limbs[i] * factor + carry
      limbs[i] = v % 10000000
      carry = math.floor(v / 10000000)
    end
    while carry > 0 do
      limbs[#limbs + 1] = carry % 10000000
      carry = math.floor(carry / 10000000)
    end
  end
  multiply_add(1, 0)
  multiply_add(65536, 0)
  multiply_add(65536, lo)
  while #limbs > 1 and limbs[#limbs] == 0 do limbs[#limbs] = nil end
  local out = {sign, string.format('%d', limbs[#limbs])}
  for i = #limbs - 1, 1, -1 do out[#out + 1] = string.format('%07d', limbs[i]) end
  return table.concat(out)
end
