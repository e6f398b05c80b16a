-- wrk script: POST a realistic chat completion (payloads/request.json).
-- Script args (after `--`): "body=PATH" sends that file instead; "stream" adds
-- "stream": true and usage to the body. A {{n}} in the body becomes a number unique to
-- each request.
-- done() prints one parseable line: BENCH_RESULT {json}; latencies in microseconds.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return (text:gsub("%s+$", ""))
end

local body = read_file(dir .. "payloads/request.json")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = body

function init(args)
  local stream = false
  for _, arg in ipairs(args) do
    local path = arg:match("^body=(.+)$")
    if path then
      body = read_file(path)
    elseif arg == "stream" then
      stream = true
    end
  end
  if stream then
    body = '{"stream": true, "stream_options": {"include_usage": true}, ' .. body:sub(2)
  end
  wrk.body = body
  -- A body with the marker {{n}} gets a new number there on every request (a chat whose
  -- history repeats and whose last question is new): a cache keyed on the whole text
  -- cannot answer it, as it could not in real traffic.
  local at = body:find("{{n}}", 1, true)
  if at then
    local before, after = body:sub(1, at - 1), body:sub(at + 5)
    local thread_id = wrk.thread:get("id") or "0"
    local sent = 0
    request = function()
      sent = sent + 1
      return wrk.format(nil, nil, nil, before .. thread_id .. "-" .. sent .. after)
    end
  end
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", tostring(threads))
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "rps": %.2f, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
