-- Advance a partition's applied position. KEYS[1]: da:applied:<topic>:<partition>.
-- ARGV: first and last offset of the partition's messages in a batch that is now fully applied,
-- force (1: the caller knows nothing readable lies between the stored position and first), and
-- after: the offset the reader delivered just before first (-2: unknown). Offsets between after
-- and first hold nothing readable (transaction markers, aborted or compacted records), so a batch
-- whose after is the stored position continues it.
--
-- The position means "every message of the partition up to here is in Redis", so it only moves
-- when the batch continues from it (first <= stored + 1, or after == stored). A batch that starts further on means
-- Redis lost writes (a restart that replayed an AOF missing its last second, a failover, a
-- FLUSHALL): the position stays, the caller sees the gap in the returned value and re-reads.
-- It never moves back, so a replay or a slower worker cannot undo progress.
-- Returns the stored position found, or -1 when there was none.
local found = tonumber(redis.call('GET', KEYS[1]) or '-1')
local first, last, force = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local after = tonumber(ARGV[4])
if (force or first <= found + 1 or after == found) and last > found then
  redis.call('SET', KEYS[1], ARGV[2])
end
return found
