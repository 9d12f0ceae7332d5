#!/usr/bin/env python3
"""KPI benchmark (not a test): `eventctl kpi` in one process, on a Ballista cluster, and DuckDB,
computing the same KPIs on the same lake in the same run.

1. Generates BENCH_EVENTS events (default 2,000,000 of ~1 KiB, 300 types, one day) with
   `eventctl gen`, piped into `eventctl ingest`, then `eventctl compact` (closed partitions,
   as the lake is the day after).
2. Starts `eventctl cluster scheduler` and two `eventctl cluster executor`s on 127.0.0.1
   (each with half the cores as task slots, so that the cluster has the cores one process has).
3. Times, twice each (the best run counts, both warm):
   - `eventctl kpi --date D` (every KPI of libs/lake-query/kpis/, whole day, one process);
   - `eventctl kpi --date D --cluster 127.0.0.1:PORT` (the same files on the cluster);
   - DuckDB (in-process, all cores) running the same KPIs over the same Parquet files with
     read_parquet(hive_partitioning, union_by_name) over the files live in the Delta tables.
4. Checks that the three agree, prints times, the ratios (cluster overhead, DuckDB), bytes read
   per KPI (`eventctl query --stats` of each KPI's SQL), and the extrapolation to 1e9 events on
   two laptops reading S3.

Run: scripts/bench-kpi.sh (release build of eventctl with the cluster feature, tools venv).
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import duckdb
from deltalake import DeltaTable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("BENCH_DIR", "/tmp/eventplat-bench-kpi")
EVENTCTL = os.environ.get("EVENTCTL", os.path.join(ROOT, "target", "release", "eventctl"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "2000000"))
SIZE = os.environ.get("BENCH_EVENT_SIZE", "1KiB")
DAY = "2026-11-23"
THREADS = os.cpu_count() or 2


def sh(cmd, **kw):
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    return time.perf_counter() - t, out


def lake_bytes(path):
    total = 0
    for root, _, files in os.walk(os.path.join(path, "events")):
        for f in files:
            if f.endswith(".parquet"):
                total += os.path.getsize(os.path.join(root, f))
    return total


def live_files(lake):
    """Per type, the day's files live in the type's Delta table (compaction leaves the merged-away
    files on disk until vacuum: a glob would count their rows twice)."""
    out = {}
    for table in sorted(glob.glob(os.path.join(lake, "events", "type=*"))):
        t = os.path.basename(table).split("=", 1)[1]
        uris = DeltaTable(table).file_uris()
        files = [u.removeprefix("file://") for u in uris if f"date={DAY}/" in u]
        if files:
            out[t] = files
    return out


def duckdb_kpis(lake):
    """The KPIs of libs/lake-query/kpis/ in DuckDB SQL over the same files (the tables' live ones)."""
    con = duckdb.connect()
    con.execute(f"SET threads TO {THREADS}")
    live = live_files(lake)

    def day(t):
        files = [f for ft in live.values() for f in ft] if t == "*" else live.get(t, [])
        listed = ", ".join(f"'{f}'" for f in files)
        return f"read_parquet([{listed}], hive_partitioning=true, union_by_name=true)"

    one = lambda sql: con.execute(sql).fetchone()
    sold = day("product_sold")
    k = {}
    k["daily_active_users"] = one(f"SELECT count(DISTINCT user_id) FROM {day('*')} WHERE user_id IS NOT NULL")[0]
    k["new_users"] = one(f"SELECT count(DISTINCT user_id) FROM {day('user_created')}")[0]
    rows = con.execute(f"SELECT type, CAST(hour AS BIGINT) AS hour, count(*) FROM {day('*')} GROUP BY ALL ORDER BY ALL").fetchall()
    k["events_by_type_hour"] = [{"type": t, "hour": h, "events": n} for t, h, n in rows]
    for kpi, t in [("products_listed", "product_listed"), ("products_contacted", "product_contacted"), ("products_sold", "product_sold")]:
        k[kpi] = one(f"SELECT count(DISTINCT product_id) FROM {day(t)}")[0]
    n, gmv = one(f"SELECT count(*), CAST(coalesce(sum(CAST(round(price * 100) AS BIGINT)), 0) AS BIGINT) FROM {sold}")
    k["sales"] = {"sales": n, "gmv_cents": gmv}
    k["median_order_value"] = one(f"SELECT median(CAST(round(price * 100) AS DOUBLE)) FROM {sold}")[0]
    rows = con.execute(f"SELECT owner_id, CAST(sum(CAST(round(price * 100) AS BIGINT)) AS BIGINT) AS g, count(*) FROM {sold} "
                       "WHERE owner_id IS NOT NULL GROUP BY owner_id ORDER BY g DESC, owner_id ASC LIMIT 10").fetchall()
    k["top_sellers"] = [{"seller_id": s, "gmv_cents": g, "sales": c} for s, g, c in rows]
    k["conversations_started"] = one(f"SELECT count(*) FROM {day('conversation_started')}")[0]
    con.close()
    return k


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", p + 1))
                    return p
                except OSError:
                    continue


def wait_port(p):
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", p)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {p}")


def start_cluster(work):
    """A scheduler and two executors, each with half the cores as task slots."""
    procs = []
    sp = free_port()
    sched = f"127.0.0.1:{sp}"
    procs.append(subprocess.Popen([EVENTCTL, "cluster", "scheduler", "--bind", sched, "--external-host", "127.0.0.1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(sp)
    slots = max(THREADS // 2, 1)
    for i in range(2):
        p = free_port()
        procs.append(subprocess.Popen([EVENTCTL, "cluster", "executor", "--scheduler", sched, "--bind", f"127.0.0.1:{p}",
                                       "--external-host", "127.0.0.1", "--concurrency", str(slots),
                                       "--work-dir", os.path.join(work, f"executor-{i}")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(p)
    return sched, slots, procs


def kpi_sql():
    """Each built-in KPI's SQL for the day."""
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "libs", "lake-query", "kpis", "*.sql"))):
        text = open(path).read()
        name = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("-- kpi:"))
        out[name] = text.replace("{date}", DAY)
    return out


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

    work = tempfile.mkdtemp(prefix="bench-kpi-cluster-")
    sched, slots, procs = start_cluster(work)
    ours, clus, duck = [], [], []
    report = remote = expected = None
    try:
        for attempt in range(2):
            t = time.perf_counter()
            expected = duckdb_kpis(lake)
            duck.append(time.perf_counter() - t)
            secs, out = sh([EVENTCTL, "kpi", "--date", DAY, "--lake", lake, "--json", "--out", os.path.join(OUT, "kpi")])
            ours.append(secs)
            report = json.loads(out.stdout)
            secs, out = sh([EVENTCTL, "kpi", "--date", DAY, "--lake", lake, "--json", "--cluster", sched,
                            "--out", os.path.join(OUT, "kpi-cluster")])
            clus.append(secs)
            remote = json.loads(out.stdout)
            print(f"run {attempt + 1}: one process {ours[-1]:.2f}s, cluster {clus[-1]:.2f}s, DuckDB {duck[-1]:.2f}s", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(work, ignore_errors=True)

    agree = report["kpis"] == expected
    cluster_agrees = remote["kpis"] == report["kpis"]
    same_reads = (remote["read"]["scanned_bytes"], remote["read"]["files_read"]) == (report["read"]["scanned_bytes"], report["read"]["files_read"])
    best, best_clus, best_duck = min(ours), min(clus), min(duck)
    read = report["read"]["bytes_read"]
    scanned = report["read"]["scanned_bytes"]

    print()
    print(f"results equal: one process == DuckDB: {agree}; cluster == one process: {cluster_agrees}; "
          f"same files and column bytes on the cluster: {same_reads}")
    print(f"one process    : {best:6.2f} s   {EVENTS / best:,.0f} events/s   read {read / 1e6:.1f} MB "
          f"({100 * read / size:.1f}% of the lake; {scanned / 1e6:.1f} MB of column data)")
    print(f"cluster        : {best_clus:6.2f} s   scheduler + 2 executors x {slots} slots on this machine: "
          f"{best_clus / best:.2f}x the one-process time ({best_clus - best:+.2f} s of overhead for {len(report['kpis'])} jobs)")
    print(f"DuckDB         : {best_duck:6.2f} s   ratio DuckDB / one process {best_duck / best:.2f}x, "
          f"DuckDB / cluster {best_duck / best_clus:.2f}x (>1 = eventctl faster)")

    # What each KPI reads, alone (a fresh process each: footers included).
    print()
    print("bytes each KPI reads (fresh process, footers included; column data apart):")
    per_kpi = {}
    for name, sql in kpi_sql().items():
        _, out = sh([EVENTCTL, "query", "--stats", "--lake", lake, "--format", "csv", "--", sql])
        r = json.loads(out.stderr.strip().splitlines()[-1])["read"]
        per_kpi[name] = {"bytes_read": r["bytes_read"], "scanned_bytes": r["scanned_bytes"], "files": r["files_read"]}
        print(f"  {name:<24} {r['bytes_read'] / 1e6:8.1f} MB from {r['files_read']:5d} files, "
              f"{r['scanned_bytes'] / 1e6:7.2f} MB column data ({r['scanned_bytes'] / EVENTS:.3f} B/event of the lake)")
    summary = {
        "events": EVENTS, "lake_bytes": size, "files": files, "one_process_s": best, "cluster_s": best_clus,
        "duckdb_s": best_duck, "cluster_over_one_process": best_clus / best, "duckdb_over_one_process": best_duck / best,
        "bytes_read": read, "scanned_bytes": scanned, "agree": agree, "cluster_agrees": cluster_agrees,
        "same_reads": same_reads, "slots_per_executor": slots, "per_kpi": per_kpi,
    }
    print(json.dumps(summary))
    return 0 if agree and cluster_agrees and same_reads else 1


if __name__ == "__main__":
    sys.exit(main())
