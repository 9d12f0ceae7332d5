#!/usr/bin/env python3
"""Ingest benchmark (not a test): `eventctl ingest` against DuckDB doing the same job.

Generates 1,000,000 events of ~1 KiB and 200,000 of ~10 KiB with `eventctl gen`, then for
each file, in the same run:
  - eventctl ingest into a fresh local lake;
  - DuckDB: the contract's checks in SQL (strict JSON, id, type pattern, attributes object,
    integer created_at in range), then COPY ... TO (FORMAT PARQUET, PARTITION_BY (type, date, hour)).
Prints events/s, MB/s, peak RSS (of that process alone, via wait4), files written, and the
ratio eventctl/DuckDB. Run: scripts/bench-ingest.sh (builds release, uses the tools venv).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("BENCH_DIR", "/tmp/eventplat-bench")
EVENTCTL = os.environ.get("EVENTCTL", os.path.join(ROOT, "target", "release", "eventctl"))

DUCK_SQL = r"""
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
    30 seconds (5 minutes while its table block is dirty) and scans past every such inode
    when it creates a file or folder: creating 7,200 files right after deleting 30,000 took
    a third of the run's CPU in `recently_deleted`. So outputs are deleted here, synced, and
    left to age before anything is measured; each run writes to fresh folders.
    """
    old = [os.path.join(OUT, d) for d in os.listdir(OUT) if d.startswith(("lake-", "duck-"))]
    if not old:
        return
    for d in old:
        subprocess.run(["rm", "-rf", d], check=True)
    subprocess.run(["sync"], check=True)
    print("deleted earlier outputs; waiting 35 s before measuring (see clear_outputs)", file=sys.stderr)
    time.sleep(35)


def count_files(folder):
    return sum(1 for _, _, fs in os.walk(folder) for f in fs if f.endswith(".parquet"))


def bench(name, events, size):
    path = os.path.join(OUT, f"{name}.ndjson")
    if not os.path.exists(path):
        print(f"generating {events} events of ~{size} into {path}", file=sys.stderr)
        subprocess.run([EVENTCTL, "gen", "--events", str(events), "--size", size, "--out", path, "--seed", "1"],
                       check=True, stderr=subprocess.DEVNULL)
    mb = os.path.getsize(path) / 1e6
    lake = os.path.join(OUT, f"lake-{name}")
    secs, rss, stdout = run([EVENTCTL, "ingest", "--json", "--no-progress", "--lake", lake, path])
    s = json.loads(stdout)
    ours = dict(secs=secs, rss=rss, eps=s["lines_read"] / secs, mbps=mb / secs,
                files=s["files_written"], partitions=s["partitions_written"], valid=s["valid"])

    duck_out = os.path.join(OUT, f"duck-{name}")
    sql = DUCK_SQL.format(input=path, out=duck_out, threads=os.cpu_count() or 2)
    code = "import duckdb,sys; duckdb.connect().execute(sys.argv[1])"
    dsecs, drss, _ = run([sys.executable, "-c", code, sql])
    lines = s["lines_read"]
    duck = dict(secs=dsecs, rss=drss, eps=lines / dsecs, mbps=mb / dsecs, files=count_files(duck_out))
    return dict(name=name, lines=lines, mb=mb, ours=ours, duck=duck, ratio=ours["eps"] / duck["eps"])


def main():
    os.makedirs(OUT, exist_ok=True)
    n_small = int(os.environ.get("BENCH_SMALL", "1000000"))
    n_large = int(os.environ.get("BENCH_LARGE", "200000"))
    clear_outputs()
    results = [bench("1k", n_small, "1KiB"), bench("10k", n_large, "10KiB")]
    print(f"{'input':<8}{'tool':<10}{'events/s':>12}{'MB/s':>9}{'peak RSS MiB':>14}{'files':>8}{'partitions':>12}{'secs':>8}")
    for r in results:
        o, d = r["ours"], r["duck"]
        print(f"{r['name']:<8}{'eventctl':<10}{o['eps']:>12,.0f}{o['mbps']:>9.1f}{o['rss']:>14.0f}{o['files']:>8}{o['partitions']:>12}{o['secs']:>8.1f}")
        print(f"{'':<8}{'duckdb':<10}{d['eps']:>12,.0f}{d['mbps']:>9.1f}{d['rss']:>14.0f}{d['files']:>8}{'':>12}{d['secs']:>8.1f}")
        print(f"{'':<8}{'ratio':<10}{r['ratio']:>11.1f}x")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
