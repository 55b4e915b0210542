-- wrk script: POST notifications, every request with a request_id never used before.
--
-- Configured through the environment (benchmarks/wrk.py sets it):
--   BENCH_PATH       path to POST to (the gateway's or the minimal endpoint's)
--   BENCH_TOKEN      bearer token (empty: no Authorization header)
--   BENCH_RUN        a random tag for this run; request ids are <run>-<thread>-<n>
--   BENCH_KIND       email | push
--   BENCH_TEMPLATE   template code
--   BENCH_USERS      user ids, comma-separated (taken in turn)
--   BENCH_BATCH      0: one notification per request; N: N per request (the batch endpoint)
--   BENCH_BATCH_FIELD  the batch body's array property ("" : the body is the array itself)
--   BENCH_COUNT      0: run for wrk's -d; N: N unique requests in all, then stop
--   BENCH_THREADS    wrk's -t (to split BENCH_COUNT between threads)
--   BENCH_RATE       0: as fast as it answers; R: R requests/s in all, on a fixed schedule
--   BENCH_RECORD     a folder: each thread writes "<notification_id> <request_id> <sent> <answered>"
--                    per accepted notification (wall-clock seconds), then "#done"
--
-- With BENCH_COUNT, once a thread has sent its share it sends its first request again (an
-- idempotent replay: nothing new is published; the answer says Idempotent-Replayed) until every
-- unique request it sent is answered, then stops; so no unique request is left in flight.
-- done() prints one line "WRKJSON {...}": counts, latency percentiles (microseconds) and the
-- first refusal's status and body.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")

local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

local function env(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then return default end
  return value
end

-- main thread: number the threads and keep them, to add up their counters in done()
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- each thread; its counters (sent, answered, accepted, items, replays, statuses) are globals,
-- which is what thread:get() reads
local path, run, kind, template, users, batch, batch_field
local quota, headers, first, out, sent_at, verifying

function init(args)
  path = env("BENCH_PATH", "/api/v1/notifications/")
  run = env("BENCH_RUN", "run")
  kind = env("BENCH_KIND", "email")
  template = env("BENCH_TEMPLATE", "bench")
  batch = tonumber(env("BENCH_BATCH", "0"))
  batch_field = env("BENCH_BATCH_FIELD", "")
  users = {}
  for id in string.gmatch(env("BENCH_USERS", ""), "[^,]+") do table.insert(users, id) end

  local count = tonumber(env("BENCH_COUNT", "0"))
  local nthreads = tonumber(env("BENCH_THREADS", "1"))
  quota = 0
  if count > 0 then
    quota = math.floor(count / nthreads)
    if tid <= count % nthreads then quota = quota + 1 end
  end
  sent, answered, accepted, items, replays = 0, 0, 0, 0, 0
  statuses = {}

  headers = { ["Content-Type"] = "application/json" }
  local token = env("BENCH_TOKEN", "")
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end

  local rate = tonumber(env("BENCH_RATE", "0"))
  if rate > 0 then
    -- a fixed schedule: this thread's k-th request is due at start + k * interval, whenever
    -- a connection is free for it (open loop while fewer than -c are in flight)
    local interval = nthreads / rate
    local due
    delay = function()
      local t = now()
      due = (due or t) + interval
      return math.max(0, (due - interval - t) * 1000)
    end
  end

  local record = env("BENCH_RECORD", "")
  if record ~= "" then
    out = assert(io.open(record .. "/thread-" .. tid .. ".txt", "w"))
    out:setvbuf("line")
    sent_at = {}
  end
  math.randomseed(tid * 7919 + os.time())
  -- wrk calls request() once on its first thread to check what it returns, and never sends it
  verifying = tid == 1
end

local function notification(n)
  local request_id = run .. "-" .. tid .. "-" .. n
  local user = users[(n % #users) + 1]
  return request_id, string.format(
    '{"notification_type":"%s","user_id":"%s","template_code":"%s",' ..
    '"variables":{"name":"Reader %d","link":"https://example.com/r/%s"},"request_id":"%s"}',
    kind, user, template, n, request_id, request_id)
end

function request()
  if verifying then
    verifying = false
    return wrk.format("POST", path, headers, "{}")
  end
  if quota > 0 and sent >= quota then
    replays = replays + 1
    return first
  end
  sent = sent + 1
  local body
  if batch > 0 then
    local parts = {}
    for i = 1, batch do
      local _, one = notification((sent - 1) * batch + i)
      parts[i] = one
    end
    body = "[" .. table.concat(parts, ",") .. "]"
    if batch_field ~= "" then body = '{"' .. batch_field .. '":' .. body .. "}" end
  else
    local request_id
    request_id, body = notification(sent)
    if sent_at ~= nil then sent_at[request_id] = now() end
  end
  local req = wrk.format("POST", path, headers, body)
  if first == nil then first = req end
  return req
end

function response(status, hdrs, body)
  if hdrs["idempotent-replayed"] or hdrs["Idempotent-Replayed"] then return end
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if status < 200 or status >= 300 then
    first_error = first_error or (status .. " " .. string.sub(body or "", 1, 300))
  else
    accepted = accepted + 1
    if batch > 0 then
      local _, n = string.gsub(body, '"notification_id"%s*:%s*"', "")
      items = items + n
    else
      items = items + 1
      if out ~= nil then
        local nid = string.match(body, '"notification_id"%s*:%s*"([^"]+)"')
        local rid = string.match(body, '"request_id"%s*:%s*"([^"]+)"')
        out:write(nid or "?", " ", rid or "?", " ",
          string.format("%.6f %.6f", sent_at[rid] or 0, now()), "\n")
        if rid ~= nil then sent_at[rid] = nil end
      end
    end
  end
  if quota > 0 and answered >= quota then
    if out ~= nil then
      out:write("#done\n")
      out:close()
      out = nil
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local totals = { sent = 0, answered = 0, accepted = 0, items = 0, replays = 0 }
  local by_code, codes = {}, {}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + (thread:get(name) or 0) end
    for code, n in pairs(thread:get("statuses") or {}) do
      by_code[code] = (by_code[code] or 0) + n
    end
  end
  for code, n in pairs(by_code) do codes[#codes + 1] = string.format('"%d":%d', code, n) end
  local refusal = ""
  for _, thread in ipairs(threads) do refusal = thread:get("first_error") or refusal end
  refusal = string.gsub((string.gsub(refusal, '[\\"]', "\\%0")), "%c", " ")
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"sent":%d,"answered":%d,"accepted":%d,' ..
    '"items":%d,"replays":%d,"statuses":{%s},' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"non_2xx":%d,' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
    '"first_refusal":"%s"}\n',
    summary.duration, summary.requests, totals.sent, totals.answered, totals.accepted,
    totals.items, totals.replays, table.concat(codes, ","),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), refusal))
end
