#!/usr/bin/env python3
"""Lake log benchmark (not a test): planning a one-hour query on big Delta tables.

Measures, in one run, the wall time of

    eventctl query --explain --stats 'SELECT count(*) FROM "<type>" WHERE date = '<d>' AND hour = <h>'

(process start, opening the table: `_last_checkpoint`, the newest checkpoint and the commits
after it, then partition pruning by the log's `date`/`hour` values; nothing else is read) on
  A. a table of BENCH_A_FILES (10,000) files in BENCH_A_COMMITS (1,000) commits, and
  B. a table of BENCH_B_COMMITS (10,000) commits of one file each (a lake writer's table),
each first at exactly that many commits (the newest version is a checkpoint: delta-rs writes
one at every version v with (v + 1) % interval == 0, and our tables set
`delta.checkpointInterval` to 20, `event_lake::table::CHECKPOINT_INTERVAL`; BENCH_INTERVAL
changes it here, 100 being Delta's default) and then interval - 1 commits later (the most
commits a reader replays after a checkpoint), against the baseline of the folder layout's planning:
one prefix LIST of the hour's folder `events/type=<t>/date=<d>/hour=<HH>/` (os.listdir on
the local lake, boto3 list_objects_v2 on S3), timed in this process. `eventctl --version` is
timed too: the process-start floor, subtracted before the ratio. Medians of BENCH_RUNS (7)
runs. Request counts: eventctl's own `--stats` (GETs, LISTs, bytes, Parquet files read)
and, on S3, one more run through a counting HTTP proxy in front of the endpoint (`--stats`
counts only reads through the lake's counting store, and the Delta log is not read through
it).

How the tables are made (fast, and as our writers leave them): `eventctl gen` + `eventctl
ingest` make a real lake; the type with the most files is copied, and commits are appended
by writing `_delta_log/<version:020>.json` files shaped like the ingest's own commit
(commitInfo with the lake writer's provenance fields, `add` actions with distinct UUIDv7
paths, partition values {"date": "YYYY-MM-DD", "hour": "H"} and `stats` JSON with
numRecords and id/created_at bounds of that hour), with a checkpoint made by the Python
`deltalake` package at each version v with (v + 1) % interval == 0, as the commit path does. The
files are spread over BENCH_DAYS (30) days of hours, in time order. Every fake path is a
hard link to one real data file of the table (the local folder-layout baseline lists real
entries; eventctl's explain reads none of them, which the run checks: it explains table A
once before the links exist). On S3 (moto, AWS_ENDPOINT_URL; skipped with BENCH_S3=0) each
table is uploaded to its own bucket, data files as empty objects.

Run: scripts/bench-lake-log.sh (builds eventctl in release, starts moto, uses the tools venv).
BENCH_DIR (default /tmp/eventplat-bench-log) holds the lakes.
"""
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
EVENTCTL = os.environ.get("EVENTCTL", os.path.join(TARGET, "release", "eventctl"))
OUT = os.environ.get("BENCH_DIR", "/tmp/eventplat-bench-log")
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
A_FILES = int(os.environ.get("BENCH_A_FILES", "10000"))
A_COMMITS = int(os.environ.get("BENCH_A_COMMITS", "1000"))
B_COMMITS = int(os.environ.get("BENCH_B_COMMITS", "10000"))
DAYS = int(os.environ.get("BENCH_DAYS", "30"))
S3 = os.environ.get("BENCH_S3", "1") != "0" and bool(os.environ.get("AWS_ENDPOINT_URL"))
CHECKPOINT_INTERVAL = int(os.environ.get("BENCH_INTERVAL", "20"))
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TAIL = CHECKPOINT_INTERVAL - 1

rng = random.Random(1)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def uuid7(ms):
    """A UUIDv7 string for a millisecond timestamp (the lake's file names)."""
    r = rng.getrandbits(74)
    n = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (r >> 62) << 64 | 0b10 << 62 | (r & ((1 << 62) - 1))
    return str(uuid.UUID(int=n))


def load_log(table):
    """{version: [action dicts]} of a table's JSON commits."""
    d = os.path.join(table, "_delta_log")
    out = {}
    for f in os.listdir(d):
        if f.endswith(".json") and f[:20].isdigit():
            with open(os.path.join(d, f)) as fh:
                out[int(f[:20])] = [json.loads(line) for line in fh if line.strip()]
    return out


def seed_lake():
    """A real lake made by eventctl gen + ingest; returns (table folder, type) of the type
    with the most data files."""
    seed = os.path.join(OUT, "seed")
    if not os.path.isdir(os.path.join(seed, "lake", "events")):
        shutil.rmtree(seed, ignore_errors=True)
        os.makedirs(seed)
        data = os.path.join(seed, "events.ndjson")
        subprocess.run([EVENTCTL, "gen", "-n", "20000", "--types", "5", "--hours", "6", "--seed", "1",
                        "--start", START.isoformat().replace("+00:00", "Z"), "--out", data],
                       check=True, stderr=subprocess.DEVNULL)
        subprocess.run([EVENTCTL, "ingest", "--json", "--no-progress", "--lake", os.path.join(seed, "lake"), data],
                       check=True, stdout=subprocess.DEVNULL)
    events = os.path.join(seed, "lake", "events")
    best = None
    for d in sorted(os.listdir(events)):
        adds = sum(1 for acts in load_log(os.path.join(events, d)).values() for a in acts if "add" in a)
        if best is None or adds > best[0]:
            best = (adds, d)
    return os.path.join(events, best[1]), best[1].removeprefix("type=")


def hour_of(i, n):
    """The event hour of the i-th of n files spread over DAYS days in time order."""
    return START + timedelta(hours=(i * DAYS * 24) // n)


class TableBuilder:
    """Appends commits shaped like the real ones to a copy of the seed table."""

    def __init__(self, seed_table, dest, total_files):
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(seed_table, dest)
        self.dest = dest
        self.total_files = total_files
        commits = load_log(dest)
        self.version = max(commits)
        # The newest commit with adds (the ingest's) is the template: its commitInfo and an add.
        v = max(v for v, acts in commits.items() if any("add" in a for a in acts))
        self.info = next(a["commitInfo"] for a in commits[v] if "commitInfo" in a)
        self.add = next(a["add"] for a in commits[v] if "add" in a)
        self.real_file = os.path.join(dest, self.add["path"])
        self.stats = json.loads(self.add["stats"])
        self.id_len = len(self.stats.get("minValues", {}).get("id", "x" * 24))
        self.files_by_hour = {}
        self.next_file = 0
        self.position = 1
        self.checkpoints = sorted(int(f[:20]) for f in os.listdir(os.path.join(dest, "_delta_log")) if ".checkpoint." in f)

    def fake_add(self, when, ms):
        rows = max(1, int(self.stats.get("numRecords", 500) * rng.uniform(0.5, 1.5)))
        date, hour = when.strftime("%Y-%m-%d"), when.hour
        path = f"date={date}/hour={hour:02d}/{uuid7(ms)}-w.parquet"
        lo = int(when.timestamp() * 1000) + rng.randrange(0, 60_000)
        hi = int(when.timestamp() * 1000) + 3_600_000 - 1 - rng.randrange(0, 60_000)
        iso = lambda t: datetime.fromtimestamp(t / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        ids = sorted("".join(rng.choice("0123456789abcdef") for _ in range(self.id_len)) for _ in range(2))
        stats = {"numRecords": rows, "minValues": {"id": ids[0], "created_at": iso(lo)},
                 "maxValues": {"id": ids[1], "created_at": iso(hi)}, "nullCount": {"id": 0, "created_at": 0}}
        add = dict(self.add, path=path, partitionValues={"date": date, "hour": str(hour)},
                   size=int(self.add["size"] * rows / max(1, self.stats.get("numRecords", rows))),
                   modificationTime=ms, stats=json.dumps(stats, separators=(",", ":")))
        self.files_by_hour.setdefault((date, hour), []).append(path)
        return {"add": add}

    def commit(self, n_files):
        """Writes the next version with n_files adds (a lake writer's commit) and, at every
        (v + 1) % CHECKPOINT_INTERVAL == 0, a checkpoint."""
        self.version += 1
        ms = int(time.time() * 1000)
        info = {k: v for k, v in self.info.items() if not k.startswith("eventplat.")}
        info.update(timestamp=ms, operation="WRITE", operationParameters={"mode": "Append"})
        info["readVersion"] = self.version - 1
        info["eventplat.source"] = "bench-lake-writer"
        info["eventplat.positions"] = f"{self.position}-{self.position + 500 * n_files - 1}"
        self.position += 500 * n_files
        actions = [{"commitInfo": info}]
        for _ in range(n_files):
            actions.append(self.fake_add(hour_of(self.next_file, self.total_files), ms))
            self.next_file += 1
        path = os.path.join(self.dest, "_delta_log", f"{self.version:020d}.json")
        with open(path + ".tmp", "w") as fh:
            fh.write("".join(json.dumps(a, separators=(",", ":")) + "\n" for a in actions))
        os.rename(path + ".tmp", path)
        if (self.version + 1) % CHECKPOINT_INTERVAL == 0:
            from deltalake import DeltaTable
            DeltaTable(self.dest, version=self.version).create_checkpoint()
            self.checkpoints.append(self.version)

    def grow(self, commits, files):
        """Appends commits until the table has `commits` commits (versions 0..commits-1) and
        `files` more files, spread evenly over the commits."""
        todo = commits - (self.version + 1)
        assert todo > 0, "the seed table already has that many commits"
        for i in range(todo):
            self.commit((files * (i + 1)) // todo - (files * i) // todo)

    def link_data(self):
        """Makes every fake path a hard link to the real data file."""
        for paths in self.files_by_hour.values():
            for p in paths:
                full = os.path.join(self.dest, p)
                if not os.path.exists(full):
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    os.link(self.real_file, full)

    def query_hour(self):
        """The hour queried (chosen once: the middle one of the hours with files, before the
        tail commits) and its files, sorted."""
        if not hasattr(self, "key"):
            self.key = sorted(self.files_by_hour)[len(self.files_by_hour) // 2]
        return self.key, sorted(self.files_by_hour.get(self.key, []))


def timed(cmd, env=None):
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, env=env)
    secs = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr.decode(errors='replace')[-2000:]}")
    return secs, p.stdout.decode(), p.stderr.decode()


def explain(lake, event_type, key):
    sql = f"SELECT count(*) FROM \"{event_type}\" WHERE date = '{key[0]}' AND hour = {key[1]}"
    return [EVENTCTL, "query", "--lake", lake, "--explain", "--stats", sql]


def measure_eventctl(lake, event_type, key, expect_files):
    walls, internal, stats, plan = [], [], None, ""
    for _ in range(RUNS):
        secs, out, err = timed(explain(lake, event_type, key))
        walls.append(secs)
        plan = out
        line = next((l for l in err.splitlines() if l.startswith("{")), None)
        if line:
            s = json.loads(line)
            stats = s.get("read")
            internal.append(s.get("elapsed_ms", float("nan")))
    # The plan names the pruned files: check it holds the hour's files and no others.
    named = {p for p in expect_files if p.split("/")[-1] in plan}
    listed = plan.count("-w.parquet")
    return dict(wall_ms=statistics.median(walls) * 1000, internal_ms=statistics.median(internal) if internal else None,
                stats=stats, plan_files=listed, expected_files=len(expect_files), expected_named=len(named))


PROXY = None


def count_requests(lake, event_type, key):
    """One more explain through the counting proxy: its S3 requests by kind."""
    global PROXY
    if PROXY is None:
        PROXY = CountingProxy(os.environ["AWS_ENDPOINT_URL"])
    PROXY.take()
    env = dict(os.environ, AWS_ENDPOINT_URL=PROXY.url)
    timed(explain(lake, event_type, key), env=env)
    return PROXY.take()


def median_ms(fn, runs):
    fn()  # warm (connection, page cache)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls) * 1000


class CountingProxy:
    """An HTTP proxy in front of the S3 endpoint that counts eventctl's requests by kind
    (LIST = GET with list-type, GET, HEAD, other): `--stats` does not see the log reads (the
    Delta kernel reads through the unprefixed, uncounted store)."""

    def __init__(self, upstream):
        import http.client
        import http.server
        import threading
        import urllib.parse
        up = urllib.parse.urlparse(upstream)
        counts = self.counts = {}
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                kind = self.command
                if kind == "GET" and "list-type=" in self.path:
                    kind = "LIST"
                with lock:
                    counts[kind] = counts.get(kind, 0) + 1
                conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        c = dict(self.counts)
        self.counts.clear()
        return c


def s3_client():
    import boto3
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def reset_bucket(client, bucket, recreate=True):
    """Empties and deletes the bucket if it exists (moto holds objects in memory), then
    creates it again."""
    try:
        while True:
            keys = client.list_objects_v2(Bucket=bucket, MaxKeys=1000).get("Contents", [])
            if not keys:
                break
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k["Key"]} for k in keys], "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except client.exceptions.NoSuchBucket:
        pass
    if recreate:
        client.create_bucket(Bucket=bucket)


def upload(client, bucket, local_table, prefix, only=None):
    """Uploads a table folder: the log as it is, data files as empty objects. `only`: the
    relative paths to upload (default all)."""
    if only is None:
        only = []
        for dirpath, _, files in os.walk(local_table):
            for f in files:
                only.append(os.path.relpath(os.path.join(dirpath, f), local_table))

    def put(rel):
        body = b"" if rel.endswith("-w.parquet") and not rel.startswith("_delta_log") else open(os.path.join(local_table, rel), "rb").read()
        client.put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, only))
    return len(only)


def row(label, r, floor, base_ms):
    net = r["wall_ms"] - floor
    s = r["stats"] or {}
    internal = f"{r['internal_ms']:.0f}" if r["internal_ms"] is not None else "n/a"
    print(f"  {label:<44}{r['wall_ms']:>9.1f}{net:>9.1f}{internal:>9}{s.get('get_requests', '?'):>6}{s.get('list_requests', '?'):>6}"
          f"{s.get('bytes_read', 0) / 1e6:>8.2f}{s.get('files_read', '?'):>6}{r['plan_files']:>6}/{r['expected_files']:<4}"
          f"{net / base_ms:>10.0f}x")


HEADER = (f"  {'table':<44}{'wall ms':>9}{'-floor':>9}{'in-proc':>9}{'GETs':>6}{'LISTs':>6}{'MB read':>8}"
          f"{'pq':>6}{'files':>11}{'vs LIST':>11}")


def main():
    if A_COMMITS % CHECKPOINT_INTERVAL or B_COMMITS % CHECKPOINT_INTERVAL:
        sys.exit(f"BENCH_A_COMMITS and BENCH_B_COMMITS must be multiples of {CHECKPOINT_INTERVAL} (the newest version a checkpoint)")
    if not os.path.exists(EVENTCTL):
        sys.exit(f"{EVENTCTL} is missing: cargo build --release -p eventctl")
    os.makedirs(OUT, exist_ok=True)
    seed_table, event_type = seed_lake()
    log(f"seed table {seed_table} ({event_type})")
    lake = os.path.join(OUT, "lake")
    shutil.rmtree(lake, ignore_errors=True)
    tables = {}
    t0 = time.monotonic()
    # A: 10,000 files in 1,000 commits (10 per commit); B: 10,000 commits of one file.
    a = TableBuilder(seed_table, os.path.join(lake, "events", f"type={event_type}"), A_FILES)
    a.grow(A_COMMITS, A_FILES)
    log(f"table A: {a.version + 1} commits, {a.next_file} fake files, checkpoints {a.checkpoints[-3:]} ({time.monotonic() - t0:.0f}s)")
    key_a, files_a = a.query_hour()
    # Explain before any fake data file exists: planning must not read data files.
    secs, out, err = timed(explain(lake, event_type, key_a))
    log(f"explain with no fake data files present: ok in {secs * 1000:.0f} ms ({err.strip()})")
    a.link_data()
    tables["A"] = (a, key_a, files_a)
    lake_b = os.path.join(OUT, "lake-b")
    shutil.rmtree(lake_b, ignore_errors=True)
    t0 = time.monotonic()
    b = TableBuilder(seed_table, os.path.join(lake_b, "events", f"type={event_type}"), B_COMMITS)
    b.grow(B_COMMITS, B_COMMITS - (b.version + 1))
    log(f"table B: {b.version + 1} commits, {b.next_file} fake files, checkpoints {b.checkpoints[-3:]} ({time.monotonic() - t0:.0f}s)")
    b.link_data()
    key_b, files_b = b.query_hour()
    tables["B"] = (b, key_b, files_b)

    floor = statistics.median(timed([EVENTCTL, "--version"])[0] for _ in range(RUNS)) * 1000
    lakes = {"A": lake, "B": lake_b}
    results = {}

    def local_round(tag):
        for name, (t, key, files) in tables.items():
            hour_dir = os.path.join(t.dest, f"date={key[0]}", f"hour={key[1]:02d}")
            base = median_ms(lambda: os.listdir(hour_dir), max(RUNS, 101))
            r = measure_eventctl(lakes[name], event_type, key, files)
            results[("local", name, tag)] = (r, base, t.version + 1, t.next_file, t.checkpoints[-1])

    local_round("at checkpoint")
    for t, _, _ in tables.values():
        for _ in range(TAIL):
            t.commit(1)
        t.link_data()
    tables = {n: (t, *t.query_hour()) for n, (t, _, _) in tables.items()}
    local_round(f"+{TAIL} commits")

    s3_note = None
    if S3:
        try:
            c = s3_client()
            for name, (t, key, files) in tables.items():
                bucket = f"bench-lake-log-{name.lower()}"
                reset_bucket(c, bucket)
                s3_lake = f"s3://{bucket}/lake"
                prefix = f"lake/events/type={event_type}"
                t0 = time.monotonic()
                # The table at its checkpoint first: all but the last TAIL commits (their data
                # files are there already, as in a live lake: uploaded before their commit).
                # No checkpoint falls in the tail, so _last_checkpoint is the same.
                tail = [f"_delta_log/{v:020d}.json" for v in range(t.version - TAIL + 1, t.version + 1)]
                rels = [os.path.relpath(os.path.join(d, f), t.dest) for d, _, fs in os.walk(t.dest) for f in fs]
                n = upload(c, bucket, t.dest, prefix, [r for r in rels if r not in set(tail)])
                log(f"S3 table {name}: {n} objects uploaded to {bucket} in {time.monotonic() - t0:.0f}s")
                hour_prefix = f"{prefix}/date={key[0]}/hour={key[1]:02d}/"
                list_hour = lambda: c.list_objects_v2(Bucket=bucket, Prefix=hour_prefix)
                base = median_ms(list_hour, RUNS)
                r = measure_eventctl(s3_lake, event_type, key, files)
                r["requests"] = count_requests(s3_lake, event_type, key)
                results[("s3", name, "at checkpoint")] = (r, base, t.version + 1 - TAIL, t.next_file - TAIL, t.checkpoints[-1])
                upload(c, bucket, t.dest, prefix, tail)
                base = median_ms(list_hour, RUNS)
                r = measure_eventctl(s3_lake, event_type, key, files)
                r["requests"] = count_requests(s3_lake, event_type, key)
                results[("s3", name, f"+{TAIL} commits")] = (r, base, t.version + 1, t.next_file, t.checkpoints[-1])
                if os.environ.get("BENCH_KEEP") != "1":
                    reset_bucket(c, bucket, recreate=False)
        except Exception as e:  # noqa: BLE001 - report and keep the local figures
            s3_note = f"S3 part failed: {e!r}"
            log(s3_note)

    print(f"eventctl --version (process start floor): {floor:.1f} ms; medians of {RUNS} runs; "
          f"'-floor' = wall minus the floor; 'in-proc' = eventctl's own elapsed_ms; pq = Parquet files read "
          f"(the checkpoint); files = files in the plan / files of that hour")
    for (store, name, tag), (r, base, commits, files, ckpt) in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "at checkpoint")):
        if tag == "at checkpoint":
            print(f"{store} table {name}: baseline LIST of the hour's folder ({'os.listdir' if store == 'local' else 'list_objects_v2'}) "
                  f"{base:.3f} ms")
            print(HEADER)
        row(f"{commits} commits, {files} files, ckpt {ckpt}", r, floor, base)
        if r.get("requests"):
            print(f"    S3 requests of one explain (counted by a proxy): {json.dumps(r['requests'], sort_keys=True)}")
        if r["stats"] is None:
            print("    (no --stats line on stderr: this eventctl does not print stats with --explain)")
        if r["expected_named"] != r["expected_files"]:
            print(f"    plan names {r['expected_named']} of the hour's {r['expected_files']} files (display may truncate)")
    if s3_note:
        print(s3_note)
    print(json.dumps({f"{k[0]}/{k[1]}/{k[2]}": dict(v[0], baseline_ms=v[1], commits=v[2], files=v[3], floor_ms=floor)
                      for k, v in results.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
