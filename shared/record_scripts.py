"""The Lua scripts that move a job record between states, each one atomic step in
Redis: cancel, start, finish (fenced), and the sweep of dead workers' jobs. Apart from
`shared/records.py`, whose names (`Keys`) and statuses (`TERMINAL`) they use.
"""

from __future__ import annotations

from sam2fleet.shared.records import TERMINAL

# --- the scripts that move a job between states ----------------------------------
#
# Each is one atomic step in Redis. The terminal statuses they test are generated
# from `TERMINAL`, so the scripts and the Python side share one definition.

_IS_TERMINAL = " or ".join(f"s == '{s.value}'" for s in sorted(TERMINAL))

# KEYS: job, done channel. ARGV: now. Queued or running jobs become cancelled.
CANCEL_SCRIPT = f"""
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if not ({_IS_TERMINAL}) then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  redis.call('PUBLISH', KEYS[2], 'cancelled')
  return 'cancelled'
end
return s
"""

# KEYS: job, done channel, the worker's held hash, the holders hash. ARGV: now,
# max_attempts, the error JSON for a job out of attempts, the worker's name, the job
# id, the delivery tag of the job's Celery message ("" for a job taken into a batch),
# the worker's supervisor beat key (name '': an unnamed store, no holder kept). A job
# whose earlier deliveries all died with their worker (killed, crashed, lost with its
# host) is failed here instead of being run again, so it cannot loop forever. A
# started job records its holder: only the holder may write its end (FINISH_SCRIPT),
# and a sweep finds it if the holder dies.
START_SCRIPT = f"""
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if {_IS_TERMINAL} then return s end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[1], 'error', ARGV[3])
  redis.call('HDEL', KEYS[1], 'holder')
  redis.call('PUBLISH', KEYS[2], 'failed')
  return 'exhausted'
end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'holder')
else
  redis.call('HSET', KEYS[1], 'holder', ARGV[4])
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6])
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[7])
end
return 'running'
"""

# KEYS: job, result, done channel, the writer's held hash. ARGV: status, result JSON or
# '', error JSON or '', now, the writing worker's name ('' for a write on the job's
# behalf by a supervisor, e.g. past the hard time limit), the job id. Every call is
# counted (terminal_attempts) before the guards, so a job that ran to the end twice is
# visible even though only one outcome is kept. Returns 1 written, 0 refused (the job
# is gone or already ended), -1 fenced: another worker holds the job now (a sweep
# released it while this one was cut off, and that worker started it again), counted
# in fenced_writes. A job released but not started again by anyone still takes the
# write: its result is as good as any, and its message is with the writer's
# supervisor, which acknowledges it next (refusing here would leave the job queued
# with no message anywhere).
FINISH_SCRIPT = f"""
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 0 end
redis.call('HINCRBY', KEYS[1], 'terminal_attempts', 1)
if ARGV[5] ~= '' then
  redis.call('HDEL', KEYS[4], ARGV[6])
  local holder = redis.call('HGET', KEYS[1], 'holder')
  if holder and holder ~= ARGV[5] then
    redis.call('HINCRBY', KEYS[1], 'fenced_writes', 1)
    return -1
  end
end
if {_IS_TERMINAL} then return 0 end
if ARGV[2] ~= '' then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
  else
    redis.call('SET', KEYS[2], ARGV[2])
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[4])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""

# --- the sweep of dead workers' jobs (worker/takeover.py) -------------------------
#
# KEYS: the dead worker's heartbeat, its supervisor's beat, its held hash, the job,
# kombu's `unacked` hash and `unacked_index` zset, the job model's shared queue.
# ARGV: the worker's name, the job id, the delivery tag it recorded, the message as
# kombu keeps it in `unacked` ('' when not looked up), the message to queue instead,
# now. One atomic step, so two sweepers can never both requeue a job:
# - a worker still beating is left alone ('alive');
# - a job it holds is released: back to `queued`, its holder cleared, so a late
#   write from the dead (or cut-off) worker is fenced ('released');
# - while its supervisor still beats, a released job's entry is kept: a supervisor
#   requeues its dead child's message itself (acks late, reject on worker lost), and
#   taking it here as well would run the job twice; but if the supervisor dies too
#   before the job is started again (the whole worker or host lost, the two beats
#   expiring a moment apart), a later sweep still finds the entry;
# - with the supervisor gone, a job that nobody else holds has its unacknowledged
#   message, still exactly as delivered, moved from kombu's unacked set to the head
#   of the shared queue ('requeued');
# - the entry is then forgotten, as is one for a job that ended or that another
#   worker started since ('gone').
RELEASE_SCRIPT = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 'alive' end
local out = 'gone'
local s = redis.call('HGET', KEYS[4], 'status')
local holder = redis.call('HGET', KEYS[4], 'holder')
local open = s and not ({_IS_TERMINAL})
if open and holder == ARGV[1] then
  redis.call('HSET', KEYS[4], 'status', 'queued', 'released_at', ARGV[6])
  redis.call('HDEL', KEYS[4], 'holder')
  out = 'released'
  s, holder = 'queued', false
end
if open and not holder and s ~= 'running' and ARGV[3] ~= '' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return out end
  if ARGV[4] ~= '' and redis.call('HGET', KEYS[5], ARGV[3]) == ARGV[4] then
    redis.call('HDEL', KEYS[5], ARGV[3])
    redis.call('ZREM', KEYS[6], ARGV[3])
    redis.call('RPUSH', KEYS[7], ARGV[5])
    out = 'requeued'
  end
end
redis.call('HDEL', KEYS[3], ARGV[2])
return out
"""

# KEYS: the holders hash, the worker's heartbeat, its held hash. ARGV: the worker's
# name. A dead worker with nothing left to release leaves the registry.
FORGET_HOLDER_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HLEN', KEYS[3]) > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""
