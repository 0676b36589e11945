-- POST the JSON body read from the file given after `--` to the URL's path; prints a JSON summary.
local body = ""

function init(args)
  local file = assert(io.open(args[1], "r"))
  body = file:read("*a")
  file:close()
end

function request()
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"tool":"wrk","requests":%d,"seconds":%.3f,"errors":%d,"p50_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
