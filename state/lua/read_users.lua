-- Distinct users per bucket of a client's days.
-- KEYS[1]: a scratch key of the client's slot, the only key declared: the caller then needs the
-- right to write it alone, not the days it reads (state/acl.py; they share its slot).
-- ARGV[1]: the number of days D; ARGV[2..D+1]: the day users keys in day order; then the number
-- of days of each bucket, in order. Returns one integer per bucket.
--
-- A user active on several days of a bucket counts once. When every day of the bucket is an
-- exact set, the answer is exact (SUNION). When some day has outgrown its set and holds a
-- HyperLogLog, the bucket is estimated: the sketches merge into the scratch key, the exact days'
-- members are added to it, and it is counted and deleted within this script.
--
-- A bucket of one day (the daily series: 90 of them in a request) is counted in one call:
-- SCARD, or PFCOUNT when the day is a HyperLogLog (SCARD refuses it with WRONGTYPE).
local scratch = KEYS[1]

local function one_day(key)
  local size = redis.pcall('SCARD', key)
  if type(size) == 'table' then
    size = redis.call('PFCOUNT', key)
  end
  return size
end

local function several_days(first, last)
  local sketches, sets = {}, {}
  for k = first, last do
    local kind = redis.call('TYPE', ARGV[k])['ok']
    if kind == 'string' then
      sketches[#sketches + 1] = ARGV[k]
    elseif kind == 'set' then
      sets[#sets + 1] = ARGV[k]
    end
  end
  if #sketches == 0 then
    return (#sets == 0) and 0 or #redis.call('SUNION', unpack(sets))
  end
  redis.call('DEL', scratch)
  redis.call('PFMERGE', scratch, unpack(sketches))
  for _, key in ipairs(sets) do
    local members = redis.call('SMEMBERS', key)
    for i = 1, #members, 1000 do
      redis.call('PFADD', scratch, unpack(members, i, math.min(i + 999, #members)))
    end
  end
  local count = redis.call('PFCOUNT', scratch)
  redis.call('DEL', scratch)
  return count
end

-- The day keys are ARGV[2..D+1]: day k of the range is ARGV[k + 1].
local out, first = {}, 2
for b = tonumber(ARGV[1]) + 2, #ARGV do
  local last = first + tonumber(ARGV[b]) - 1
  out[#out + 1] = (last == first) and one_day(ARGV[first]) or several_days(first, last)
  first = last + 1
end
return out
