-- Each device's distinct users over a range of a client's days, for a ranking.
-- KEYS: the client's month device-users hashes the range touches (apply_client.lua).
-- ARGV: per key, the bitmask of that month's days inside the range (bit d-1 for day d).
-- Returns a flat list: device id, users, ... for the devices with a user in the range. A user
-- active on a device in two months of the range counts once for it. Exact.
local seen, counts, order = {}, {}, {}
for k = 1, #KEYS do
  local mask = tonumber(ARGV[k])
  local fields = redis.call('HGETALL', KEYS[k])
  for i = 1, #fields, 2 do
    local pair = fields[i]
    if not seen[pair] and bit.band(tonumber(fields[i + 1]), mask) ~= 0 then
      seen[pair] = true
      local device = string.sub(pair, 1, 36)
      local count = counts[device]
      if count == nil then
        order[#order + 1] = device
        count = 0
      end
      counts[device] = count + 1
    end
  end
end
local out = {}
for _, device in ipairs(order) do
  out[#out + 1] = device
  out[#out + 1] = counts[device]
end
return out
