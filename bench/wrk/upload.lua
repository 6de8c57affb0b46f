-- POST /api/storage/upload/-shaped bodies, a distinct tenant per request.
-- args: path api_key tenants tenant_prefix nthreads
-- Tenant of the k-th request of thread t: prefix .. ((k * nthreads + t) % tenants),
-- so with tenants = 1 every request hits one hot tenant.
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  path = args[1]
  tenants = tonumber(args[3])
  prefix = args[4]
  nthreads = tonumber(args[5])
  counter = 0
  headers = {
    ["Authorization"] = "Bearer " .. args[2],
    ["Content-Type"] = "application/json",
  }
end

function request()
  local n = (counter * nthreads + tid) % tenants
  counter = counter + 1
  local body = string.format(
    '{"tenant_id":"%s%d","filename":"report %d.pdf","content_type":"application/pdf",' ..
    '"size_bytes":1048576}', prefix, n, counter)
  return wrk.format("POST", path, headers, body)
end

dofile("summary.lua")  -- done(): the summary line
