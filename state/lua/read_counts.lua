#!lua flags=no-writes
-- Activity per bucket of a device's days.
-- KEYS: day counter hashes in day order; ARGV: the number of days of each bucket, in order.
-- Called with EVALSHA_RO: it writes nothing (state/acl.py).
-- Returns one integer per bucket (a day without data counts 0).
local out, k = {}, 1
for b = 1, #ARGV do
  local sum = 0
  for _ = 1, tonumber(ARGV[b]) do
    sum = sum + tonumber(redis.call('HGET', KEYS[k], 'n') or '0')
    k = k + 1
  end
  out[b] = sum
end
return out
