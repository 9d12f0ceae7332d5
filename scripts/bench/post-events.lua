-- wrk script: POST batches of 500 NDJSON events of ~1 KB, each with a unique data.id
-- (so JetStream stores every one instead of deduplicating), to /v1/events.
local key = os.getenv("BENCH_API_KEY") or "bench"
local batch = tonumber(os.getenv("BENCH_BATCH") or "500")
local pad = string.rep("lorem ipsum dolor sit amet consectetur ", 22)
local types = { "product_viewed", "product_liked", "product_favorited", "conversation_started", "product_contacted" }
local counter = 0
-- Per-thread tag: math.random is not seeded per thread, so every thread would draw the same
-- tag (and repeat the others' ids, which the bus's duplicate window then drops).
local thread_tag = "t"
local next_tid = 0
function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end
function init(args)
  thread_tag = string.format("%d-%d", tid or 0, os.time())
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.headers["Authorization"] = "Bearer " .. key

request = function()
  local parts = {}
  for i = 1, batch do
    counter = counter + 1
    parts[i] = string.format(
      '{"data":{"id":"%s-%d","type":"%s","attributes":{"user_id":"u%d","product_id":"p%d","owner_id":"u%d","description":"%s"}},"meta":{"created_at":%d,"source":"bench"}}',
      thread_tag, counter, types[(counter % 5) + 1], counter % 100000, counter % 1000000, counter % 7919, pad,
      1795392000000 + (counter % 3600000))
  end
  return wrk.format(nil, "/v1/events", nil, table.concat(parts, "\n") .. "\n")
end

done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors_status=%d duration_us=%d p50_us=%d p99_us=%d batch=%d\n",
    summary.requests, summary.errors.status, summary.duration, latency:percentile(50), latency:percentile(99), batch))
end
