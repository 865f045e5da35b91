-- Distinct users per bucket of a device's days.
-- KEYS: day HyperLogLogs in day order; ARGV: the number of days of each bucket, in order.
-- PFCOUNT of several keys counts their union server side, so a user active on several days of
-- a bucket counts once. Returns one integer per bucket.
local out, first = {}, 1
for b = 1, #ARGV do
  local last = first + tonumber(ARGV[b]) - 1
  out[b] = redis.call('PFCOUNT', unpack(KEYS, first, last))
  first = last + 1
end
return out
