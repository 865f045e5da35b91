-- Each device's activity over a range of a client's days, for a ranking.
-- KEYS: the client-day aggregate hashes of the range (state/fleet.py). No ARGV.
-- Returns a flat list: device id, activity, device id, activity, ... for the devices with any
-- activity field in the range (the caller adds the client's other devices, at zero). Device
-- fields are the 36-character ids; 'n', 'h' and 'o<p>' are the day's own.
local totals, order = {}, {}
for k = 1, #KEYS do
  local fields = redis.call('HGETALL', KEYS[k])
  for i = 1, #fields, 2 do
    local name = fields[i]
    if #name == 36 then
      local total = totals[name]
      if total == nil then
        order[#order + 1] = name
        total = 0
      end
      totals[name] = total + tonumber(fields[i + 1])
    end
  end
end
local out = {}
for _, name in ipairs(order) do
  out[#out + 1] = name
  out[#out + 1] = string.format('%d', totals[name])
end
return out
