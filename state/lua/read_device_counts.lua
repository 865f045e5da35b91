#!lua flags=no-writes
-- Activity per bucket of a device's days, from its month hashes (apply_device.lua).
-- KEYS: the month keys of the range, in order.
-- ARGV[1]: number of months M; then per month its first day in the range and the number of the
-- range's days in it (the range's days are consecutive); then the number of days of each bucket,
-- in order. Returns one integer per bucket (a day without data counts 0).
local month_count = tonumber(ARGV[1])
local values = {}
for m = 1, month_count do
  local first, count = tonumber(ARGV[2 * m]), tonumber(ARGV[2 * m + 1])
  local fields = {}
  for d = first, first + count - 1 do fields[#fields + 1] = d end
  local found = redis.call('HMGET', KEYS[m], unpack(fields))
  for i = 1, count do values[#values + 1] = tonumber(found[i] or '0') end
end
local out, k = {}, 1
for b = 2 * month_count + 2, #ARGV do
  local sum = 0
  for _ = 1, tonumber(ARGV[b]) do
    sum = sum + values[k]
    k = k + 1
  end
  out[#out + 1] = sum
end
return out
