-- Shared by the scripts that apply heartbeats to a day (apply_device.lua, apply_client.lua):
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
-- the limit. Hashes stay strings: Lua numbers are doubles and would lose 64-bit precision.
-- A new day has a new users key: it gets its expiry, and needs no SCARD while it is small.
local function add_users(counter, users, names, new_day, sketch, expire_at, exact_limit)
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
    redis.call('HSET', counter, 'h', '1')
  end
end

