-- wrk script for scripts/bench-stats.sh: GET /v1/users/<user>/stats?days=<BENCH_DAYS>.
-- BENCH_TOKENS=<file of "user jwt" lines>: a random user of that (hot) set with its own JWT;
-- otherwise a random user among BENCH_USERS (u1..uN) with the service key BENCH_KEY.
local tokens_file = os.getenv("BENCH_TOKENS")
local users = tonumber(os.getenv("BENCH_USERS") or "10000000")
local key = os.getenv("BENCH_KEY") or "bench"
local days = os.getenv("BENCH_DAYS") or "7"
local hot = {}

init = function(args)
  math.randomseed(os.time() + math.random(1, 1000000))
  if tokens_file and tokens_file ~= "" then
    for line in io.lines(tokens_file) do
      local u, t = line:match("^(%S+)%s+(%S+)$")
      if u then hot[#hot + 1] = { u, "Bearer " .. t } end
    end
  end
end

request = function()
  if #hot > 0 then
    local e = hot[math.random(1, #hot)]
    return wrk.format("GET", "/v1/users/" .. e[1] .. "/stats?days=" .. days, { ["Authorization"] = e[2] })
  end
  local u = "u" .. math.random(1, users)
  return wrk.format("GET", "/v1/users/" .. u .. "/stats?days=" .. days, { ["Authorization"] = "Bearer " .. key })
end

done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors_status=%d errors_other=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
