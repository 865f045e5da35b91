-- wrk script of the query bench: random devices, 90-day series, a JSON summary at the end.
--
-- Environment (set by bench/query.py):
--   BENCH_DEVICES   file of "<client_id> <device_id>" lines
--   BENCH_START, BENCH_END   the range, YYYY-MM-DD (inclusive)
--   BENCH_SERIES    the series asked in turn: "metric:granularity" pairs, comma-separated
--   BENCH_MIX       the name of that mix, for the bench's messages
--   BENCH_TOKEN     bearer token
--   BENCH_SEED      seed of the device choice (each thread adds its own number)
--
-- Each request asks for a random device and the next series of the mix, in turn. done() prints
-- one line "BENCHJSON {...}" with the request count, the errors and latency percentiles in
-- microseconds; wrk counts every response of status 400 or above in errors.status.

local devices = {}
for line in io.lines(os.getenv("BENCH_DEVICES")) do
  local client, device = line:match("^(%S+)%s+(%S+)$")
  if client then devices[#devices + 1] = {client, device} end
end

local series = {}
for pair in os.getenv("BENCH_SERIES"):gmatch("[^,]+") do
  local metric, granularity = pair:match("^(.-):(.+)$")
  series[#series + 1] = "metric=" .. metric .. "&granularity=" .. granularity
end
local range = "&start_date=" .. os.getenv("BENCH_START") .. "&end_date=" .. os.getenv("BENCH_END")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("number", thread_count)
end

-- Requests are formatted once per thread, so that wrk spends its time on the wire.
local requests, turn = {}, 0
function init(args)
  math.randomseed(tonumber(os.getenv("BENCH_SEED")) * 1000 + number)
  for s, query in ipairs(series) do
    requests[s] = {}
    for d, pick in ipairs(devices) do
      local path = "/v2/clients/" .. pick[1] .. "/analytics/devices/" .. pick[2]
        .. "/activity?" .. query .. range
      requests[s][d] = wrk.format("GET", path)
    end
  end
end

function request()
  turn = turn % #series + 1
  return requests[turn][math.random(#devices)]
end

local PERCENTILES = {1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99}

function done(summary, latency)
  local curve = {}
  for _, p in ipairs(PERCENTILES) do
    curve[#curve + 1] = string.format("[%g, %d]", p, latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": '
      .. '{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "curve": [%s]}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, table.concat(curve, ", ")))
end
