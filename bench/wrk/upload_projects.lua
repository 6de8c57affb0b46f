-- POST /api/storage/upload/-shaped bodies for several projects, mixed: request k of
-- thread t goes to project (k * nthreads + t) % #keys, with its own tenant.
-- args: path api_keys(comma-separated) tenants tenant_prefix nthreads thread_offset
-- (thread_offset: distinct per wrk process when several run at once)
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  path = args[1]
  keys = {}
  for key in string.gmatch(args[2], "[^,]+") do keys[#keys + 1] = key end
  tenants = tonumber(args[3])
  prefix = args[4]
  nthreads = tonumber(args[5])
  tid = tid + tonumber(args[6])
  counter = 0
end

function request()
  local n = counter * nthreads + tid
  counter = counter + 1
  local headers = {
    ["Authorization"] = "Bearer " .. keys[(n % #keys) + 1],
    ["Content-Type"] = "application/json",
  }
  local body = string.format(
    '{"tenant_id":"%s%d","filename":"report %d.pdf","content_type":"application/pdf",' ..
    '"size_bytes":1048576}', prefix, math.floor(n / #keys) % tenants, counter)
  return wrk.format("POST", path, headers, body)
end

dofile("summary.lua")  -- done(): the summary line
