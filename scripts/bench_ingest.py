#!/usr/bin/env python3
"""Ingest benchmark (not a test): `eventctl ingest` against DuckDB doing the same job.

Generates 1,000,000 events of ~1 KiB and 200,000 of ~10 KiB with `eventctl gen` (1% of lines
invalid, BENCH_BAD_RATIO), over one fixed day (2026-11-23, 24 hours, about 7,200 type-hour
partitions, as every figure before 2026-12-07 had: `gen` now defaults to the last 6 hours,
whose 2,100 larger partitions outgrow ingest's memory budget and spill to disk; BENCH_HOURS
changes the span), then for
each file, in the same run:
  - eventctl ingest into a fresh local lake;
  - DuckDB doing the same job (DUCK_SQL): every check of the contract in SQL with its reason,
    valid events by COPY ... TO (FORMAT PARQUET, PARTITION_BY (type, date, hour)), invalid
    lines with reason, file, line and arrival time to a quarantine; then a check that DuckDB
    kept and quarantined exactly what eventctl did (same valid count, same quarantined line
    numbers with the same reasons);
  - DuckDB doing the lighter job earlier figures used (DUCK_LITE_SQL: no duplicate-key check,
    no quarantine), as a second baseline.
DuckDB still does less than eventctl: it keeps `attributes` and `meta` as JSON text (no
typed columns per event type), does not sort rows by created_at or drop repeated ids.
Prints events/s, MB/s, peak RSS (of that process alone, via wait4), files written, the
ratios eventctl/DuckDB, and what eventctl's commits to the Delta tables cost (`commit_s` of
its summary, included in its time: seconds, tables committed, ms per table; the tables are
committed 8 at a time, so ms per table is wall time over tables, not one commit's latency).
Run: scripts/bench-ingest.sh (builds release, uses the tools venv).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("BENCH_DIR", "/tmp/eventplat-bench")
# 1% invalid lines (every kind the generator makes): both tools quarantine them.
BAD_RATIO = float(os.environ.get("BENCH_BAD_RATIO", "0.01"))
# Event time: one fixed day by default (the workload of every earlier figure).
HOURS = int(os.environ.get("BENCH_HOURS", "24"))
START = "2026-11-23T00:00:00Z"
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
EVENTCTL = os.environ.get("EVENTCTL", os.path.join(TARGET, "release", "eventctl"))
# Seconds between deleting earlier outputs and measuring (see clear_outputs).
SETTLE_S = int(os.environ.get("BENCH_SETTLE_S", "65"))

# DuckDB doing the same job: every check of the contract with its reason code (duplicate keys
# included: DuckDB's JSON functions keep both keys, so `json_keys` shows them), valid events
# into hive partitions, invalid lines with reason, source file, line number and arrival time
# into `quarantine/`. Multi-path `json_type`/`json_extract` parse a line once per call. The
# line number is `row_number() OVER ()`; the run checks it against eventctl's (see
# duck_counts), since DuckDB does not promise scan order with preserve_insertion_order off.
DUCK_SQL = r"""
SET threads TO {threads};
SET memory_limit = '8GB';
SET preserve_insertion_order = false;
CREATE TEMP TABLE checked AS
WITH src AS (
  SELECT row_number() OVER () AS line_no, filename AS source, line
  FROM read_csv('{input}', columns={{'line': 'VARCHAR'}}, delim=E'\x1f', quote='', escape='', header=false,
                auto_detect=false, max_line_size=2000000, strict_mode=false, filename=true)
), parsed AS (
  SELECT *, CASE WHEN ok THEN json_type(line, ['$', '$.data', '$.meta', '$.data.id', '$.data.type',
                                              '$.data.attributes', '$.meta.created_at']) END AS t
  FROM (SELECT *, line IS NOT NULL AND strlen(line) <= {max_bytes} AND json_valid(line) AS ok FROM src)
), typed AS (
  SELECT *,
    CASE WHEN t[1] = 'OBJECT' THEN json_keys(line) END AS k0,
    CASE WHEN t[2] = 'OBJECT' THEN json_keys(line, '$.data') END AS k1,
    CASE WHEN t[3] = 'OBJECT' THEN json_keys(line, '$.meta') END AS k2,
    CASE WHEN t[4] = 'VARCHAR' AND t[5] = 'VARCHAR' THEN json_extract_string(line, ['$.data.id', '$.data.type']) END AS s,
    CASE WHEN t[7] IN ('UBIGINT', 'BIGINT') THEN TRY_CAST(json_extract(line, '$.meta.created_at') AS BIGINT) END AS ca
  FROM parsed
)
SELECT line_no, source, line, s[1] AS id, s[2] AS type, ca,
  CASE
    WHEN line IS NULL OR trim(line) = '' THEN 'empty_line'
    WHEN strlen(line) > {max_bytes} THEN 'too_large'
    WHEN NOT ok THEN 'invalid_json'
    WHEN t[1] <> 'OBJECT' THEN 'not_an_object'
    WHEN len(k0) <> len(list_distinct(k0)) THEN 'duplicate_key'
    WHEN t[2] IS NULL THEN 'missing_data'
    WHEN t[2] <> 'OBJECT' THEN 'data_not_object'
    WHEN len(k1) <> len(list_distinct(k1)) THEN 'duplicate_key'
    WHEN t[3] IS NULL THEN 'missing_meta'
    WHEN t[3] <> 'OBJECT' THEN 'meta_not_object'
    WHEN len(k2) <> len(list_distinct(k2)) THEN 'duplicate_key'
    WHEN t[4] IS NULL THEN 'missing_id'
    WHEN t[4] <> 'VARCHAR' OR s[1] = '' THEN 'invalid_id'
    WHEN t[5] IS NULL THEN 'missing_type'
    WHEN t[5] <> 'VARCHAR' OR NOT regexp_full_match(s[2], '[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}') THEN 'invalid_type'
    WHEN t[6] IS NULL THEN 'missing_attributes'
    WHEN t[6] <> 'OBJECT' THEN 'attributes_not_object'
    WHEN t[7] IS NULL THEN 'missing_created_at'
    WHEN ca IS NULL THEN 'invalid_created_at'
    WHEN ca < 0 OR ca >= 4102444800000 THEN 'created_at_out_of_range'
  END AS reason
FROM typed;
COPY (
  SELECT id, make_timestamp(ca * 1000) AS created_at, type,
         strftime(make_timestamp(ca * 1000), '%Y-%m-%d') AS date, hour(make_timestamp(ca * 1000)) AS hour,
         j[1] AS attributes, j[2] AS meta
  FROM (SELECT *, json_extract(line, ['$.data.attributes', '$.meta']) AS j FROM checked WHERE reason IS NULL)
) TO '{out}/events' (FORMAT PARQUET, PARTITION_BY (type, date, hour), COMPRESSION zstd);
COPY (
  SELECT line AS raw, reason, source, line_no AS line, now() AS arrived_at,
         strftime(now(), '%Y-%m-%d') AS date, hour(now()) AS hour
  FROM checked WHERE reason IS NOT NULL
) TO '{out}/quarantine' (FORMAT PARQUET, PARTITION_BY (date, hour), COMPRESSION zstd);
"""

# The lighter job earlier figures were measured against: most checks but no duplicate-key
# check, no reasons and no quarantine (invalid lines are dropped). Kept as a second baseline.
DUCK_LITE_SQL = r"""
SET threads TO {threads};
SET memory_limit = '8GB';
SET preserve_insertion_order = false;
COPY (
  WITH src AS (
    SELECT line FROM read_csv('{input}', columns={{'line': 'VARCHAR'}}, delim=E'\x1f', quote='', escape='',
                              header=false, auto_detect=false, max_line_size=2000000, strict_mode=false)
  ), parsed AS (
    SELECT line FROM src WHERE strlen(line) <= 1048576 AND json_valid(line)
  ), checked AS (
    SELECT line,
           json_extract_string(line, '$.data.id') AS id,
           json_extract_string(line, '$.data.type') AS type,
           TRY_CAST(json_extract(line, '$.meta.created_at') AS BIGINT) AS ca
    FROM parsed
    WHERE json_type(line, '$') = 'OBJECT'
      AND json_type(line, '$.data.id') = 'VARCHAR'
      AND json_type(line, '$.data.type') = 'VARCHAR'
      AND json_type(line, '$.data.attributes') = 'OBJECT'
      AND json_type(line, '$.meta.created_at') IN ('UBIGINT', 'BIGINT')
  )
  SELECT id,
         make_timestamp(ca * 1000) AS created_at,
         type,
         strftime(make_timestamp(ca * 1000), '%Y-%m-%d') AS date,
         hour(make_timestamp(ca * 1000)) AS hour,
         json_extract(line, '$.data.attributes') AS attributes,
         json_extract(line, '$.meta') AS meta
  FROM checked
  WHERE id <> '' AND regexp_full_match(type, '[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}')
    AND ca >= 0 AND ca < 4102444800000
) TO '{out}' (FORMAT PARQUET, PARTITION_BY (type, date, hour), COMPRESSION zstd);
"""


def run(cmd, **kw):
    """Runs a command; returns (seconds, peak RSS MiB of that process, stdout)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, **kw)
        stdout = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        stderr = errf.read()
    secs = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{stderr.decode(errors='replace')[-2000:]}")
    return secs, usage.ru_maxrss / 1024, stdout


def clear_outputs():
    """Deletes the lakes of earlier runs, then waits until their inodes may be reused.

    A journal-less ext4 (these machines' disk) will not reuse an inode deleted in the last
    60 seconds (6 minutes while its inode-table block is dirty: RECENTCY_MIN and
    RECENTCY_DIRTY of fs/ext4/ialloc.c since Linux 5.7) and scans past every such inode when
    it creates a file or folder: creating 7,200 files right after deleting 30,000 took a
    third of the run's CPU in `recently_deleted`. So outputs are deleted here, synced (the
    table blocks are then clean), and left to age past that minute before anything is
    measured; each run writes to fresh folders. (Until 2026-12-07 the wait was 35 s, which
    left eventctl, measured first, inside the window and DuckDB, measured after it, outside.)
    """
    old = [os.path.join(OUT, d) for d in os.listdir(OUT) if d.startswith(("lake-", "duck-"))]
    if not old:
        return
    for d in old:
        subprocess.run(["rm", "-rf", d], check=True)
    subprocess.run(["sync"], check=True)
    print(f"deleted earlier outputs; waiting {SETTLE_S} s before measuring (see clear_outputs)", file=sys.stderr)
    time.sleep(SETTLE_S)


def count_files(folder):
    return sum(1 for _, _, fs in os.walk(folder) for f in fs if f.endswith(".parquet"))


def duck_counts(out, lake):
    """What DuckDB wrote, next to what eventctl wrote: (valid events, {reason: quarantined
    lines}, whether both quarantines hold the same (line number, reason) pairs). Read in a
    separate process, outside the timed runs."""
    code = r"""
import duckdb, json, os, sys
c = duckdb.connect()
out, lake = sys.argv[1], sys.argv[2]
valid = c.execute(f"select count(*) from read_parquet('{out}/events/**/*.parquet')").fetchone()[0]
def pairs(files):
    return set(map(tuple, c.execute("select line, reason from read_parquet(?, hive_partitioning=false)", [files]).fetchall()))
dq = pairs(f"{out}/quarantine/**/*.parquet") if os.path.isdir(f"{out}/quarantine") else set()
# eventctl's quarantine is a Delta table: its files are the ones its log names (a glob would
# also read the log's checkpoint Parquet files under _delta_log/, and uncommitted files).
eq = set()
if os.path.isdir(f"{lake}/quarantine/_delta_log"):
    from deltalake import DeltaTable
    files = DeltaTable(f"{lake}/quarantine").file_uris()
    if files:
        eq = pairs(files)

by_reason = {}
for _, r in dq:
    by_reason[r] = by_reason.get(r, 0) + 1
print(json.dumps([valid, by_reason, dq == eq]))
"""
    out_json = subprocess.run([sys.executable, "-c", code, out, lake], check=True, capture_output=True).stdout
    return json.loads(out_json)


def duck_run(sql_template, path, out, mb, lines):
    os.makedirs(out)
    sql = sql_template.format(input=path, out=out, threads=os.cpu_count() or 2, max_bytes=1 << 20)
    code = "import duckdb,sys; duckdb.connect().execute(sys.argv[1])"
    secs, rss, _ = run([sys.executable, "-c", code, sql])
    # Data files only, as eventctl's count (the same-job query also writes a quarantine).
    events = os.path.join(out, "events")
    files = count_files(events if os.path.isdir(events) else out)
    return dict(secs=secs, rss=rss, eps=lines / secs, mbps=mb / secs, files=files)


def bench(name, events, size):
    path = os.path.join(OUT, f"{name}-bad{BAD_RATIO}-{HOURS}h.ndjson")
    if not os.path.exists(path):
        print(f"generating {events} events of ~{size} into {path}", file=sys.stderr)
        subprocess.run([EVENTCTL, "gen", "--events", str(events), "--size", size, "--out", path, "--seed", "1",
                        "--bad-ratio", str(BAD_RATIO), "--start", START, "--hours", str(HOURS)],
                       check=True, stderr=subprocess.DEVNULL)
    mb = os.path.getsize(path) / 1e6
    lake = os.path.join(OUT, f"lake-{name}")
    secs, rss, stdout = run([EVENTCTL, "ingest", "--json", "--no-progress", "--lake", lake, path])
    s = json.loads(stdout)
    lines = s["lines_read"]
    ours = dict(secs=secs, rss=rss, eps=lines / secs, mbps=mb / secs,
                files=s["files_written"], partitions=s["partitions_written"], valid=s["valid"],
                commit_s=s["commit_s"], tables=s["tables_committed"])

    duck = duck_run(DUCK_SQL, path, os.path.join(OUT, f"duck-{name}"), mb, lines)
    valid, by_reason, same_lines = duck_counts(os.path.join(OUT, f"duck-{name}"), lake)
    same = valid == s["valid"] and by_reason == s["quarantined_by_reason"] and same_lines
    if not same:
        print(f"{name}: DuckDB's output differs from eventctl's: valid {valid} vs {s['valid']}, "
              f"quarantined {by_reason} vs {s['quarantined_by_reason']}, same (line, reason) pairs: "
              f"{same_lines}", file=sys.stderr)
    lite = duck_run(DUCK_LITE_SQL, path, os.path.join(OUT, f"duck-lite-{name}"), mb, lines)
    return dict(name=name, lines=lines, mb=mb, ours=ours, duck=duck, lite=lite, same_counts=same,
                ratio=ours["eps"] / duck["eps"], ratio_lite=ours["eps"] / lite["eps"])


def main():
    os.makedirs(OUT, exist_ok=True)
    n_small = int(os.environ.get("BENCH_SMALL", "1000000"))
    n_large = int(os.environ.get("BENCH_LARGE", "200000"))
    clear_outputs()
    results = [bench("1k", n_small, "1KiB"), bench("10k", n_large, "10KiB")]
    print(f"{'input':<8}{'tool':<12}{'events/s':>12}{'MB/s':>9}{'peak RSS MiB':>14}{'files':>8}{'partitions':>12}{'secs':>8}")
    for r in results:
        o, d, l = r["ours"], r["duck"], r["lite"]
        print(f"{r['name']:<8}{'eventctl':<12}{o['eps']:>12,.0f}{o['mbps']:>9.1f}{o['rss']:>14.0f}{o['files']:>8}{o['partitions']:>12}{o['secs']:>8.1f}")
        print(f"{'':<8}{'duckdb':<12}{d['eps']:>12,.0f}{d['mbps']:>9.1f}{d['rss']:>14.0f}{d['files']:>8}{'':>12}{d['secs']:>8.1f}")
        print(f"{'':<8}{'duckdb-lite':<12}{l['eps']:>12,.0f}{l['mbps']:>9.1f}{l['rss']:>14.0f}{l['files']:>8}{'':>12}{l['secs']:>8.1f}")
        agree = "same valid count, same quarantined lines and reasons" if r["same_counts"] else "COUNTS DIFFER (see stderr)"
        print(f"{'':<8}{'ratio':<12}{r['ratio']:>11.1f}x vs duckdb ({agree}), {r['ratio_lite']:.1f}x vs duckdb-lite")
        per_table = o["commit_s"] * 1000 / o["tables"] if o["tables"] else float("nan")
        print(f"{'':<8}{'commits':<12}{o['commit_s']:>11.2f}s for {o['tables']} tables ({per_table:.1f} ms per table, "
              f"{100 * o['commit_s'] / o['secs']:.0f}% of eventctl's time)")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
