#!/usr/bin/env python3
"""KPI benchmark (not a test): `eventctl kpi` against DuckDB computing the same KPIs on the
same lake, in the same run.

1. Generates BENCH_EVENTS events (default 2,000,000 of ~1 KiB, 300 types, one day) with
   `eventctl gen`, piped into `eventctl ingest`, then `eventctl compact` (closed partitions,
   as the lake is the day after).
2. Times, twice each (the best run counts, both warm):
   - `eventctl kpi --date D` (every KPI of libs/lake-query/kpis/, whole day);
   - DuckDB (in-process, all cores) running the same KPIs over the same Parquet files with
     read_parquet(hive_partitioning, union_by_name);
   - `eventctl kpi --shard 1/2` and `--shard 2/2` (two laptops, run here one after the other)
     and `eventctl kpi merge`.
3. Checks that both engines agree, prints times, the ratio, bytes read, events/s, and the
   extrapolation to 1e9 events on two laptops over a 1 Gbit/s link.

Run: scripts/bench-kpi.sh (release build of eventctl, tools venv with DuckDB).
"""
import json
import os
import shutil
import subprocess
import sys
import time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("BENCH_DIR", "/tmp/eventplat-bench-kpi")
EVENTCTL = os.environ.get("EVENTCTL", os.path.join(ROOT, "target", "release", "eventctl"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "2000000"))
SIZE = os.environ.get("BENCH_EVENT_SIZE", "1KiB")
DAY = "2026-11-23"
THREADS = os.cpu_count() or 2
LINK_BYTES_PER_S = 1e9 / 8  # 1 Gbit/s


def sh(cmd, **kw):
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - t, out.stdout


def lake_bytes(path):
    total = 0
    for root, _, files in os.walk(os.path.join(path, "events")):
        for f in files:
            if f.endswith(".parquet"):
                total += os.path.getsize(os.path.join(root, f))
    return total


def duckdb_kpis(lake):
    """The KPIs of libs/lake-query/kpis/ in DuckDB SQL over the same files."""
    con = duckdb.connect()
    con.execute(f"SET threads TO {THREADS}")
    day = lambda t: (f"read_parquet('{lake}/events/type={t}/date={DAY}/*/*.parquet', "
                     "hive_partitioning=true, union_by_name=true)")
    one = lambda sql: con.execute(sql).fetchone()
    k = {}
    k["daily_active_users"] = one(f"SELECT count(DISTINCT user_id) FROM {day('*')} WHERE user_id IS NOT NULL")[0]
    k["new_users"] = one(f"SELECT count(DISTINCT user_id) FROM {day('user_created')}")[0]
    rows = con.execute(f"SELECT type, CAST(hour AS BIGINT) AS hour, count(*) FROM {day('*')} GROUP BY ALL ORDER BY ALL").fetchall()
    k["events_by_type_hour"] = [{"type": t, "hour": h, "events": n} for t, h, n in rows]
    for kpi, t in [("products_listed", "product_listed"), ("products_contacted", "product_contacted"), ("products_sold", "product_sold")]:
        k[kpi] = one(f"SELECT count(DISTINCT product_id) FROM {day(t)}")[0]
    n, gmv = one(f"SELECT count(*), CAST(coalesce(sum(CAST(round(price * 100) AS BIGINT)), 0) AS BIGINT) FROM {day('product_sold')}")
    k["sales"] = {"sales": n, "gmv_cents": gmv}
    k["conversations_started"] = {"conversations": one(f"SELECT count(*) FROM {day('conversation_started')}")[0]}
    con.close()
    return k


def main():
    os.makedirs(OUT, exist_ok=True)
    lake = os.path.join(OUT, "lake")
    stamp = os.path.join(OUT, f"lake-{EVENTS}-{SIZE}.done")
    if not os.path.exists(stamp):
        shutil.rmtree(lake, ignore_errors=True)
        print(f"generating and ingesting {EVENTS:,} events of ~{SIZE} ...", flush=True)
        t = time.perf_counter()
        gen = subprocess.Popen([EVENTCTL, "gen", "-n", str(EVENTS), "--size", SIZE, "--start", f"{DAY}T00:00:00Z"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        subprocess.run([EVENTCTL, "ingest", "--json", "--no-progress", "--lake", lake, "-"], stdin=gen.stdout,
                       check=True, stdout=subprocess.DEVNULL)
        gen.wait()
        subprocess.run([EVENTCTL, "compact", "--json", "--lake", lake], check=True, stdout=subprocess.DEVNULL)
        open(stamp, "w").close()
        print(f"  lake ready in {time.perf_counter() - t:.0f}s", flush=True)
    size = lake_bytes(lake)
    files = sum(len([f for f in fs if f.endswith('.parquet')]) for _, _, fs in os.walk(os.path.join(lake, "events")))
    print(f"lake: {EVENTS:,} events, {files:,} files, {size / 1e6:.1f} MB of Parquet ({size / EVENTS:.0f} B/event)")

    ours, duck, shards = [], [], []
    report = expected = None
    for attempt in range(2):
        t = time.perf_counter()
        expected = duckdb_kpis(lake)
        duck.append(time.perf_counter() - t)
        secs, out = sh([EVENTCTL, "kpi", "--date", DAY, "--lake", lake, "--json", "--out", os.path.join(OUT, "kpi")])
        ours.append(secs)
        report = json.loads(out)
        parts = []
        for i in (1, 2):
            secs, out = sh([EVENTCTL, "kpi", "--date", DAY, "--lake", lake, "--json", "--shard", f"{i}/2",
                            "--out", os.path.join(OUT, "shards")])
            parts.append((secs, json.loads(out)))
        t = time.perf_counter()
        _, out = sh([EVENTCTL, "kpi", "merge", "--json", "--out", os.path.join(OUT, "merged")] +
                    [p[1]["partial"] for p in parts])
        merge_s = time.perf_counter() - t
        merged = json.loads(out)
        shards.append((parts, merge_s, merged))
        print(f"run {attempt + 1}: eventctl {ours[-1]:.2f}s, DuckDB {duck[-1]:.2f}s, "
              f"shards {parts[0][0]:.2f}s + {parts[1][0]:.2f}s, merge {merge_s:.2f}s", flush=True)

    agree = report["kpis"] == expected
    merged_ok = all(s[2]["kpis"] == report["kpis"] for s in shards)
    best, best_duck = min(ours), min(duck)
    parts, merge_s, _ = min(shards, key=lambda s: max(p[0] for p in s[0]))
    shard_wall = max(p[0] for p in parts)
    read = report["read"]["bytes_read"]
    shard_bytes = [p[1]["read"]["bytes_read"] for p in parts]
    rate = EVENTS / best

    print()
    print(f"results equal (eventctl vs DuckDB): {agree}; shard 1/2 + 2/2 merged == single run: {merged_ok}")
    print(f"eventctl kpi   : {best:6.2f} s   {rate:,.0f} events/s   read {read / 1e6:.1f} MB "
          f"({100 * read / size:.1f}% of the lake, {read / EVENTS:.1f} B/event)")
    print(f"DuckDB         : {best_duck:6.2f} s   {EVENTS / best_duck:,.0f} events/s")
    print(f"ratio          : eventctl is {best_duck / best:.2f}x DuckDB's speed (>1 = faster)")
    print(f"two shards     : {parts[0][0]:.2f} s and {parts[1][0]:.2f} s (run one after the other here), "
          f"read {shard_bytes[0] / 1e6:.1f} + {shard_bytes[1] / 1e6:.1f} MB; merge {merge_s:.2f} s")

    # Extrapolation to 1e9 events/day: two laptops like this machine, each computing its shard,
    # sharing one 1 Gbit/s link to the bucket. Per-file costs (footers) are those of this lake's
    # small files (~EVENTS/7200 events a partition); compacted files of a real day hold ~500x
    # more events each, so bytes per event are an upper bound.
    # The footer share of the bytes read: a query that reads footers only (counts by type).
    _, out = sh([EVENTCTL, "query", "--stats", "--lake", lake, "--format", "csv",
                 f"SELECT type, count(*) FROM lake.events WHERE date = '{DAY}' GROUP BY type"])
    footers = json.loads(subprocess.run([EVENTCTL, "query", "--stats", "--lake", lake, "--format", "csv",
                                         f"SELECT count(*) FROM lake.events WHERE date = '{DAY}'"],
                                        check=True, capture_output=True, text=True).stderr)["read"]["bytes_read"]
    columns = max(read - footers, 0)
    n = 1e9
    scale = n / EVENTS
    moved_linear = sum(shard_bytes) * scale
    # A real day has about as many files as this lake (one or a few per type and hour once
    # compacted), so footers stay ~constant while column bytes grow with the events.
    moved = footers + columns * scale
    t_cpu = shard_wall * scale
    t_net = moved / LINK_BYTES_PER_S
    t_net_linear = moved_linear / LINK_BYTES_PER_S
    t_full = size * scale / LINK_BYTES_PER_S
    print(f"bytes read     : {footers / 1e6:.1f} MB of footers ({files:,} files) + {columns / 1e6:.1f} MB of columns "
          f"({columns / EVENTS:.2f} B/event)")
    print()
    print(f"1e9 events on two laptops (each like this {THREADS}-core machine, one shard each) over one shared 1 Gbit/s link:")
    print(f"  bytes to move : {moved / 1e9:.1f} GB (footers + KPI columns at {columns / EVENTS:.2f} B/event); "
          f"{moved_linear / 1e9:.0f} GB if everything scaled with events; the whole day is {size * scale / 1e9:.0f} GB "
          f"of Parquet ({t_full / 60:.0f} min on the link)")
    print(f"  network       : {t_net / 60:.1f} min (at most {t_net_linear / 60:.1f} min)")
    print(f"  CPU           : {t_cpu / 60:.1f} min at most (slowest shard {shard_wall:.2f}s for {EVENTS / 2:,.0f} events "
          f"= {EVENTS / 2 / shard_wall:,.0f} events/s per laptop, per-file costs included)")
    print(f"  estimate      : ~{max(t_net, t_cpu) / 60:.0f} min ({'network' if t_net > t_cpu else 'CPU'} bound), "
          f"plus merging two partial files ({merge_s:.2f}s here)")
    summary = {
        "events": EVENTS, "lake_bytes": size, "files": files, "eventctl_s": best, "duckdb_s": best_duck,
        "ratio_duckdb_over_eventctl": best_duck / best, "bytes_read": read, "shard_s": [p[0] for p in parts],
        "shard_bytes": shard_bytes, "merge_s": merge_s, "agree": agree, "merge_equal": merged_ok,
        "footer_bytes": footers, "column_bytes": columns,
        "extrapolation_1e9": {"network_s": t_net, "network_linear_s": t_net_linear, "cpu_s": t_cpu, "full_read_s": t_full},
    }
    print(json.dumps(summary))
    return 0 if agree and merged_ok else 1


if __name__ == "__main__":
    sys.exit(main())
