-- Replays S3 event webhook bodies, one per request, from one file per thread.
-- args: path secret file_prefix
-- Thread t sends the lines of file_prefix .. t .. ".jsonl" once each. When every
-- one has been answered it writes file_prefix .. t .. ".done" ("<answered> <non-200>")
-- for the harness, which times the run by those files and then stops wrk.
-- Connections that run out of bodies meanwhile send GET /healthz (not counted).
local next_tid = 0
local threads = {}

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  prefix = args[3]
  headers = {
    ["Authorization"] = "Bearer " .. args[2],
    ["Content-Type"] = "application/json",
  }
  bodies = {}
  for line in io.lines(prefix .. tid .. ".jsonl") do
    bodies[#bodies + 1] = line
  end
  sent, answered, bad, finished = 0, 0, 0, false
  idle = wrk.format("GET", "/healthz")
  -- wrk calls request() once on the first thread's state before the run, only to
  -- count pipelined requests; that request is never sent.
  verify_call = (tid == 0)
end

function request()
  if verify_call then
    verify_call = false
    return idle
  end
  if sent < #bodies then
    sent = sent + 1
    return wrk.format("POST", path, headers, bodies[sent])
  end
  return idle
end

function response(status, hdrs, body)
  if finished or string.sub(body, 1, 10) ~= '{"records"' and status == 200 then
    return
  end
  answered = answered + 1
  if status ~= 200 then
    bad = bad + 1
  end
  if answered == #bodies then
    finished = true
    local f = io.open(prefix .. tid .. ".done", "w")
    f:write(answered .. " " .. bad .. "\n")
    f:close()
    pcall(function() wrk.thread:stop() end)
  end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format('{"tid":%d,"sent":%d,"answered":%d,"bad":%d}\n',
      t:get("tid"), t:get("sent"), t:get("answered"), t:get("bad")))
  end
end
