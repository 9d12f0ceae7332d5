#!/usr/bin/env python3
"""The platform's monthly AWS bill, computed from one file of stated assumptions.

    python3 scripts/cost-model.py                      # the bill, per scenario and in total
    python3 scripts/cost-model.py --set workload.events_per_day=1e8 --set run.s3_via=nat
    python3 scripts/cost-model.py --markdown           # the tables docs/architecture.md shows
    python3 scripts/cost-model.py --json               # every line, for other tools

Every number comes from docs/cost-model.toml (prices with their date and region, the
workload, retentions, the benchmarks' measured ratios and rates, how we run it): change one
and everything that depends on it is recomputed. Each line of the bill carries its
arithmetic. Alternatives (MSK with Kafka Connect, Kinesis Data Streams with Firehose) are
costed in the same model, at this volume, a tenth of it and ten times it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ASSUMPTIONS = ROOT / "docs" / "cost-model.toml"
HOURS = 730  # hours in a month
DAYS = 30.4  # days in a month
GB = 1e9
TB = 1e12


@dataclass
class Line:
    scenario: str
    item: str
    usd: float
    how: str


@dataclass
class Bill:
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, scenario: str, item: str, usd: float, how: str) -> None:
        self.lines.append(Line(scenario, item, usd, how))

    def total(self, scenario: str | None = None) -> float:
        return sum(l.usd for l in self.lines if scenario is None or l.scenario == scenario)

    def scenarios(self) -> list[str]:
        seen: list[str] = []
        for l in self.lines:
            if l.scenario not in seen:
                seen.append(l.scenario)
        return seen


def load(path: Path, overrides: list[str]) -> dict:
    with open(path, "rb") as f:
        a = tomllib.load(f)
    for o in overrides:
        key, _, raw = o.partition("=")
        section, _, name = key.partition(".")
        if not raw or section not in a or name not in a[section]:
            raise SystemExit(f"--set {o!r}: expected section.key=value with a key of {path.name}")
        old = a[section][name]
        if isinstance(old, bool):
            a[section][name] = raw.lower() in ("1", "true", "yes")
        elif isinstance(old, (int, float)):
            a[section][name] = float(raw)
        else:
            a[section][name] = raw
    return a


def gb(n_bytes: float) -> float:
    return n_bytes / GB


def usd(x: float) -> str:
    return f"${x:,.0f}"


def vcpus(avg_cores: float, run: dict) -> int:
    """Provisioned vCPU for an average need: headroom for the peaks, and the minimum pods."""
    return max(int(run["min_pods"]), math.ceil(avg_cores * run["headroom"]))


def lake_storage(monthly_bytes: float, month: int, r: dict, p: dict) -> tuple[float, float, float]:
    """(Standard bytes, Glacier IR bytes, $) held in `month` (1-based) of the lake's life:
    each month adds `monthly_bytes`; data older than lake_standard_days moves to Glacier IR;
    data older than lake_months is deleted."""
    kept = min(month, int(r["lake_months"]))
    standard_months = min(kept, r["lake_standard_days"] / DAYS)
    standard = monthly_bytes * standard_months
    glacier = monthly_bytes * max(0.0, kept - standard_months)
    cost = gb(standard) * p["s3_standard_gb_month"] + gb(glacier) * p["s3_glacier_ir_gb_month"]
    return standard, glacier, cost


def history_day_bytes(a: dict) -> float:
    """Bytes the history table grows by a day: every event once per user it names, as JSON
    in zstd-compressed Parquet."""
    w, m = a["workload"], a["measured"]
    return w["events_per_day"] * w["event_bytes"] * w["users_per_event"] / m["history_ratio"]


def history_commits_per_day(a: dict) -> float:
    """Build commits a day: one per chunk of source Parquet (the build's memory bound), at
    least one per build."""
    w, m, run = a["workload"], a["measured"], a["run"]
    lake_day = w["events_per_day"] * w["event_bytes"] / m["parquet_ratio"]
    return max(86_400 / run["history_build_every_secs"], lake_day / run["history_chunk_source_bytes"])


def history_l0_file_bytes(a: dict) -> float:
    """A build file: a commit's share of a day's history, in one bucket."""
    return history_day_bytes(a) / history_commits_per_day(a) / a["run"]["history_buckets"]


def history_rewrites(a: dict) -> float:
    """Times compaction rewrites a row of the history table in its month (size-tiered: the
    build files into a run, then log_fanout of the month's growth over the first run's size,
    then the closed month once)."""
    run = a["run"]
    month_bucket = history_day_bytes(a) * DAYS / run["history_buckets"]
    first_run = history_l0_file_bytes(a) * run["history_l0_trigger"]
    tiers = max(0.0, math.log(max(month_bucket / max(first_run, 1.0), 1.0), run["history_fanout"]))
    return 1 + math.ceil(tiers) + 1


def history_lines(b: Bill, s: str, a: dict) -> None:
    """The cold tier (issue 24): the lake's per-user history table, its build and compaction."""
    w, r, m, run, p = a["workload"], a["retention"], a["measured"], a["run"], a["prices"]
    day = history_day_bytes(a)
    hr = dict(r, lake_standard_days=r["history_standard_days"])
    std, gla, cost = lake_storage(day * DAYS, 10**6, hr, p)
    b.add(s, f"history table S3 storage, steady state ({r['lake_months']:.0f} months kept, as the lake)", cost,
          f"{w['events_per_day'] * w['event_bytes'] / TB:.0f} TB/day x {w['users_per_event']} users per event / {m['history_ratio']} (zstd JSON) = {day / TB:.2f} TB/day: "
          f"grows {day * 365 / TB:,.0f} TB a year; {std / TB:.0f} TB Standard ({r['history_standard_days']:.0f} days) + {gla / TB:.0f} TB Glacier IR")
    rewrites = history_rewrites(a)
    b.add(s, f"history files merged away, kept {r['history_vacuum_days']:.0f} day(s)", gb(day * (rewrites - 1) * r["history_vacuum_days"]) * p["s3_standard_gb_month"],
          f"compaction rewrites a row {rewrites:.0f} times in its month (size-tiered, fan-out {run['history_fanout']:.0f}); the inputs stay until vacuum")
    ev_s = w["events_per_day"] / 86_400
    build_cores = ev_s / m["history_build_events_s_per_core"]
    compact_cores = day * rewrites / 86_400 / 1e6 / m["history_compact_mb_s_per_core"]
    b.add(s, "history build + compaction (CronJob)", (build_cores + compact_cores) * run["headroom"] * p["vcpu_hour"] * HOURS,
          f"{ev_s:,.0f} events/s / {m['history_build_events_s_per_core']:,} per core = {build_cores:.1f} cores + rewriting {day * rewrites / TB:.1f} TB/day at {m['history_compact_mb_s_per_core']} MB/s per core = {compact_cores:.1f} cores (x {run['headroom']:.0f} headroom)")
    commits = history_commits_per_day(a)
    files_day = commits * run["history_buckets"]
    puts = files_day + day * rewrites / 32e6 + commits * 2
    gets_month = w["timeline_reads_per_day"] * m["history_gets_per_page"] * DAYS
    glacier_gb = w["timeline_reads_per_day"] * m["history_mb_per_page"] / 1000 * DAYS
    b.add(s, "history S3 requests and Glacier IR retrievals", puts * DAYS / 1000 * p["s3_put_per_1000"] + gets_month / 1000 * p["s3_get_per_1000"] + glacier_gb * p["s3_glacier_ir_retrieval_gb"],
          f"{files_day:,.0f} build files/day ({commits:,.0f} commits of {run['history_chunk_source_bytes'] / 2**20:.0f} MiB of source, {history_l0_file_bytes(a) / 1e6:.1f} MB per bucket) + compaction outputs (32 MB parts); {w['timeline_reads_per_day']:,.0f} pages/day x {m['history_gets_per_page']} GETs, {m['history_mb_per_page']} MB each")


def history_in_dynamodb(a: dict) -> float:
    """The alternative to the history table: every item kept in DynamoDB for the lake's
    retention (storage only; writes are the same)."""
    w, r, m, p = a["workload"], a["retention"], a["measured"], a["prices"]
    items = w["events_per_day"] * w["users_per_event"] * 365 * r["lake_months"] / 12
    return gb(items * (m["timeline_item_bytes"] + 100)) * p["dynamodb_storage_gb_month"]


def ours(a: dict) -> Bill:
    """The platform as built: NATS JetStream on EC2, Parquet/Delta on S3, DynamoDB, RDS, ElastiCache."""
    w, r, m, run, p = a["workload"], a["retention"], a["measured"], a["run"], a["prices"]
    b = Bill()
    ev_s = w["events_per_day"] / 86_400
    raw_day = w["events_per_day"] * w["event_bytes"]
    raw_mb_s = raw_day / 86_400 / 1e6
    compress = run.get("bus_compression", "zstd") != "none"
    bus_ratio = m["bus_bytes_ratio"] if compress else 1.0
    bus_day = raw_day / bus_ratio

    # --- the shared pipeline: gateway, bus, cross-AZ, load balancer
    s = "pipeline"
    b.add(s, "NATS JetStream nodes", run["nats_nodes"] * p["nats_node_hour"] * HOURS,
          f"{run['nats_nodes']:.0f} x m7g.2xlarge x {HOURS} h (needs {raw_mb_s / bus_ratio * w['peak_factor'] / run['nats_mb_s_per_node']:.1f} nodes' throughput at peak)")
    disk = bus_day * r["bus_hours"] / 24 * run["bus_replicas"] / (1 - run["bus_disk_free"])
    b.add(s, f"bus storage ({r['bus_hours']:.0f} h retention)", gb(disk) * p["gp3_gb_month"],
          f"{raw_day / TB:.1f} TB/day / {bus_ratio:.1f} (compression) x {r['bus_hours'] / 24:.1f} days x {run['bus_replicas']:.0f} replicas / {1 - run['bus_disk_free']:.1f} (free space) = {disk / TB:.0f} TB gp3")
    crossing = 2 / 3  # a random client or consumer is in another AZ than the leader 2 times out of 3
    share = run["consumer_groups_all_types"] + w["stats_share"] + w["features_share"]
    az_day = bus_day * ((run["bus_replicas"] - 1) + crossing + crossing * share)
    b.add(s, "cross-AZ traffic", gb(az_day) * p["cross_az_gb"] * DAYS,
          f"bus bytes {bus_day / TB:.1f} TB/day x ({run['bus_replicas'] - 1:.0f} replica copies + 2/3 producer->leader + 2/3 x {share:.2f} consumer reads, per-type subscriptions) x ${p['cross_az_gb']}/GB")
    lcu = gb(raw_day / w["client_body_compression"]) / 24
    b.add(s, "ALB", (lcu * p["alb_lcu_hour"] + p["alb_hour"]) * HOURS,
          f"{raw_day / TB:.0f} TB/day / {w['client_body_compression']:.0f} (compressed bodies) = {lcu:.0f} GB/h = LCU")
    gw_cores = raw_mb_s / m["gateway_mb_s_per_core"] + (ev_s * m.get("bus_compress_us_per_event", 0) / 1e6 if compress else 0)
    b.add(s, "gateway pods", vcpus(gw_cores, run) * p["vcpu_hour"] * HOURS,
          f"{raw_mb_s:.0f} MB/s / {m['gateway_mb_s_per_core']} MB/s per core{' + compression' if compress else ''} = {gw_cores:.1f} cores avg -> {vcpus(gw_cores, run)} vCPU")

    # --- scenario 1: the lake
    s = "1 lake (OLAP)"
    lake_day = raw_day / m["parquet_ratio"]
    monthly = lake_day * DAYS
    std, gla, store_usd = lake_storage(monthly, 10**6, r, p)
    b.add(s, f"S3 storage, steady state ({r['lake_months']:.0f} months kept)", store_usd,
          f"{lake_day / TB:.2f} TB/day of Parquet ({raw_day / TB:.0f} TB / {m['parquet_ratio']}): grows {lake_day * 365 / TB:,.0f} TB a year; {std / TB:.0f} TB Standard ({r['lake_standard_days']:.0f} days) + {gla / TB:.0f} TB Glacier IR")
    b.add(s, f"S3 removed files kept {r['lake_vacuum_days']:.0f} days (time travel)", gb(lake_day * r["lake_vacuum_days"]) * p["s3_standard_gb_month"],
          f"compaction replaces a day's files; the inputs stay until vacuum: {lake_day * r['lake_vacuum_days'] / TB:.1f} TB Standard")
    files_day = w["event_types"] * 24 * run["flushes_per_partition_hour"] * run["lake_writer_pods"]
    puts_day = files_day * (1 + run["delta_commits_per_flush"]) + lake_day / (16e6) + w["event_types"] * 24 * 2
    b.add(s, "S3 requests (writes, Delta commits, compaction)", puts_day * DAYS / 1000 * p["s3_put_per_1000"] + (monthly / (128e6)) / 1000 * p["s3_transition_per_1000"],
          f"{files_day:,.0f} files/day + a log commit each + 16 MB multipart parts + compaction output; lifecycle transitions")
    decode = ev_s * m.get("bus_decode_us_per_event", 0) / 1e6 if compress else 0.0
    lw_cores = raw_mb_s / m["lake_writer_mb_s_per_core"] + decode
    b.add(s, "lake writer pods", vcpus(lw_cores, run) * p["vcpu_hour"] * HOURS, f"{raw_mb_s:.0f} MB/s / {m['lake_writer_mb_s_per_core']} MB/s per core{' + decoding' if compress else ''} = {lw_cores:.1f} cores avg")
    comp_cores = lake_day * run["compactions_per_day"] * m["parquet_ratio"] / 86_400 / 1e6 / m["compaction_mb_s_per_core"]
    b.add(s, "compaction compute", comp_cores * p["vcpu_hour"] * HOURS,
          f"re-reads and rewrites each day once: {comp_cores:.1f} cores (rate assumed equal to the writer's)")
    s3_day = lake_day * (1 + 2 * run["compactions_per_day"])
    nat_usd = gb(s3_day) * p["nat_gb"] * DAYS + 3 * p["nat_hour"] * HOURS
    if run["s3_via"] == "nat":
        b.add(s, "S3 traffic through NAT gateways", nat_usd, f"{s3_day / TB:.1f} TB/day to and from S3 x ${p['nat_gb']}/GB: use a gateway endpoint (free)")
    else:
        b.add(s, "S3 traffic through the S3 gateway endpoint", 0.0, f"{s3_day / TB:.1f} TB/day to and from S3; through NAT it would cost {usd(nat_usd)}")
    scanned = w["athena_queries_per_day"] * w["athena_gb_scanned_per_query"] * DAYS
    b.add(s, "Athena", scanned / 1000 * p["athena_tb"], f"{w['athena_queries_per_day']:.0f} queries/day x {w['athena_gb_scanned_per_query']:.0f} GB scanned x ${p['athena_tb']}/TB")
    glue = w["athena_queries_per_day"] * w["glue_requests_per_query"] * DAYS
    b.add(s, "Glue catalog", max(0.0, glue - 1e6) / 1e6 * p["glue_requests_million"], f"{glue:,.0f} requests/month (first million free); {w['event_types']:.0f} tables stored free")

    # --- scenario 2: the timeline
    s = "2 timeline (history API)"
    items_s = ev_s * w["users_per_event"]
    wcu = items_s / run["dynamodb_utilisation"]
    b.add(s, "DynamoDB writes, provisioned + autoscaling", wcu * p["dynamodb_wcu_hour"] * HOURS,
          f"{items_s:,.0f} items/s (< 1 KB: 1 WCU) / {run['dynamodb_utilisation']} utilisation = {wcu:,.0f} WCU (on-demand: {usd(items_s * 86_400 * DAYS / 1e6 * p['dynamodb_ondemand_write_million'])})")
    table = (m["timeline_item_bytes"] + 100) * items_s * 86_400 * r["timeline_hot_days"]
    b.add(s, f"DynamoDB storage ({r['timeline_hot_days']:.0f}-day hot window)", gb(table) * p["dynamodb_storage_gb_month"],
          f"({m['timeline_item_bytes']} B item + 100 B overhead) x {items_s * 86_400 * r['timeline_hot_days'] / 1e9:.0f} G items = {table / TB:.1f} TB")
    b.add(s, "DynamoDB reads", 50 * p["dynamodb_rcu_hour"] * HOURS, f"{w['timeline_reads_per_day']:,.0f} requests/day: 50 RCU provisioned")
    tl_cores = ev_s / m["timeline_events_s_per_core"] + (ev_s * m.get("bus_decode_us_per_event", 0) / 1e6 if compress else 0.0)
    b.add(s, "timeline pods", vcpus(tl_cores, run) * p["vcpu_hour"] * HOURS, f"{ev_s:,.0f} events/s / {m['timeline_events_s_per_core']:,} per core")
    if w.get("history_table"):
        history_lines(b, s, a)

    # --- scenario 3: stats
    s = "3 stats (mobile)"
    rows = w["daily_users"] * w["stats_metrics_per_user_day"] * r["stats_days"]
    db_gb = rows * 100 / GB
    b.add(s, "RDS Postgres db.r6g.xlarge Multi-AZ", p["rds_r6g_xlarge_multi_az_hour"] * HOURS, "aggregator upserts a few hundred rows/s; reads are cached")
    b.add(s, f"RDS storage ({r['stats_days']:.0f} days kept)", max(20.0, db_gb * 1.2) * p["rds_gp3_gb_month_multi_az"],
          f"{rows / 1e9:.1f} G rows x ~100 B with index = {db_gb:.0f} GB (+20%)")
    b.add(s, "ElastiCache Redis r7g.large x 2", 2 * p["elasticache_r7g_large_hour"] * HOURS, "primary + replica")
    rps = w["daily_users"] * w["stats_requests_per_user_day"] / 86_400 * w["peak_factor"]
    b.add(s, "stats pods", vcpus(rps / m["stats_cached_rps_per_core"] + ev_s * w["stats_share"] / m["timeline_events_s_per_core"], run) * p["vcpu_hour"] * HOURS,
          f"{rps:,.0f} req/s at peak / {m['stats_cached_rps_per_core']:,} per core + the aggregator's {w['stats_share']:.0%} of events")

    # --- scenario 4: features
    s = "4 features (re-ranker)"
    redis_gib = w["active_products"] * m["feature_bytes_per_product"] / 2**30
    nodes = max(1, math.ceil(redis_gib / (0.75 * p["elasticache_r7g_large_gib"])))
    b.add(s, f"ElastiCache Redis r7g.large x {2 * nodes}", 2 * nodes * p["elasticache_r7g_large_hour"] * HOURS,
          f"{w['active_products'] / 1e6:.0f} M products x {m['feature_bytes_per_product']} B = {redis_gib:.1f} GiB; primary + replica")
    b.add(s, "features pods", vcpus(ev_s * w["features_share"] / m["timeline_events_s_per_core"] + w["feature_reads_per_second"] / 5_000, run) * p["vcpu_hour"] * HOURS,
          f"the updater's {w['features_share']:.0%} of events + {w['feature_reads_per_second']:,} batch reads/s")

    # --- running it
    s = "platform"
    b.add(s, "EKS control plane", p["eks_cluster_hour"] * HOURS, "one cluster")
    b.add(s, "operating NATS ourselves", run["ops_hours_self_managed"] * run["ops_hour_usd"], f"{run['ops_hours_self_managed']:.0f} engineer hours/month (upgrades, on-call)")
    return b


def bus_and_ingest_alternatives(a: dict) -> dict[str, float]:
    """The part that differs between the alternatives: moving events from the gateway to the
    consumers and to the lake's Parquet files (bus, its storage and cross-AZ traffic, the
    lake ingest compute, operations). Everything else (S3, DynamoDB, RDS, Redis, APIs) is
    the same in the three designs."""
    w, r, m, run, p = a["workload"], a["retention"], a["measured"], a["run"], a["prices"]
    raw_day = w["events_per_day"] * w["event_bytes"]
    raw_mb_s = raw_day / 86_400 / 1e6
    out: dict[str, float] = {}

    b = ours(a)
    pick = {"NATS JetStream nodes", "cross-AZ traffic", "lake writer pods", "operating NATS ourselves"}
    out["ours: NATS JetStream + lake writer"] = sum(l.usd for l in b.lines if l.item in pick or l.item.startswith("bus storage"))

    # MSK: brokers sized on throughput like NATS; replication between brokers is free;
    # producers cross AZs to leaders; consumers fetch from a replica in their AZ (KIP-392).
    bus_day = raw_day / m["bus_batch_ratio"]
    brokers = max(3, 3 * math.ceil(raw_mb_s / m["bus_batch_ratio"] * w["peak_factor"] / run["nats_mb_s_per_node"] / 3))
    msk = brokers * p["msk_broker_hour"] * HOURS
    msk += gb(bus_day * r["bus_hours"] / 24 * 3) * p["msk_storage_gb_month"]
    msk += gb(bus_day * 2 / 3) * p["cross_az_gb"] * DAYS
    mcu = math.ceil(raw_mb_s * w["peak_factor"] / p["msk_connect_mb_s_per_mcu"] / 2)
    msk += mcu * p["msk_connect_mcu_hour"] * HOURS
    msk += run["ops_hours_managed"] * run["ops_hour_usd"]
    out["MSK + Kafka Connect S3 sink"] = msk

    # Kinesis Data Streams (provisioned for the peak, 1 MB/s per shard in) + Firehose with
    # format conversion and dynamic partitioning (it needs the JSON, so records go uncompressed).
    shards = math.ceil(max(raw_mb_s * w["peak_factor"], w["events_per_day"] / 86_400 * w["peak_factor"] / 1000))
    kds = shards * p["kds_shard_hour"] * HOURS
    kds += w["events_per_day"] * DAYS * math.ceil(w["event_bytes"] / 25_000) / 1e6 * p["kds_put_unit_million"]
    if r["bus_hours"] > 24:
        kds += shards * p["kds_extended_retention_shard_hour"] * HOURS
    consumers = run["consumer_groups_all_types"]  # the timeline reads with enhanced fan-out beside Firehose
    kds += shards * consumers * p["kds_efo_shard_hour"] * HOURS + gb(raw_day) * consumers * p["kds_efo_gb"] * DAYS
    billed = w["events_per_day"] * math.ceil(w["event_bytes"] / 5_000) * 5_000
    fh = gb(billed) * DAYS * (p["firehose_gb"] + p["firehose_format_conversion_gb"] + p["firehose_dynamic_partitioning_gb"])
    fh += w["event_types"] * 24 * 60 / 1000 * p["firehose_objects_per_1000"] * DAYS
    out["Kinesis Data Streams + Firehose (Parquet)"] = kds + fh + run["ops_hours_managed"] * run["ops_hour_usd"]
    return out


def scaled(a: dict, factor: float) -> dict:
    b = copy.deepcopy(a)
    b["workload"]["events_per_day"] *= factor
    b["workload"]["daily_users"] *= factor
    b["workload"]["active_products"] *= factor
    return b


def growth(a: dict) -> list[tuple[int, float]]:
    """The lake's storage bill in months 1, 3, 6, 12, 24 and 36 of its life."""
    w, r, m, p = a["workload"], a["retention"], a["measured"], a["prices"]
    monthly = w["events_per_day"] * w["event_bytes"] / m["parquet_ratio"] * DAYS
    return [(mo, lake_storage(monthly, mo, r, p)[2]) for mo in (1, 3, 6, 12, 24, 36)]


def history_growth(a: dict) -> list[tuple[int, float, float]]:
    """The history table's size (TB) and storage bill in months 1, 3, 6, 12, 24 and 36."""
    r, p = a["retention"], a["prices"]
    hr = dict(r, lake_standard_days=r["history_standard_days"])
    monthly = history_day_bytes(a) * DAYS
    out = []
    for mo in (1, 3, 6, 12, 24, 36):
        std, gla, cost = lake_storage(monthly, mo, hr, p)
        out.append((mo, (std + gla) / TB, cost))
    return out


def markdown(a: dict) -> str:
    b = ours(a)
    out = [f"Prices: {a['prices']['as_of']}. Volume: {a['workload']['events_per_day']:,.0f} events/day of {a['workload']['event_bytes']:,.0f} B.", ""]
    out += ["| scenario | item | $/month | arithmetic |", "|---|---|---:|---|"]
    for l in b.lines:
        out.append(f"| {l.scenario} | {l.item} | {usd(l.usd)} | {l.how} |")
    out += ["", "| scenario | $/month |", "|---|---:|"]
    for s in b.scenarios():
        out.append(f"| {s} | {usd(b.total(s))} |")
    out.append(f"| **total** | **{usd(b.total())}** |")
    out += ["", "The lake's storage as it grows (lifecycle: Standard, then Glacier IR; deleted after the retention):", "",
            "| month of the lake | " + " | ".join(str(mo) for mo, _ in growth(a)) + " |",
            "|---|" + "---:|" * len(growth(a)),
            "| S3 storage $/month | " + " | ".join(usd(c) for _, c in growth(a)) + " |"]
    if a["workload"].get("history_table"):
        hg = history_growth(a)
        out += ["| history table, TB | " + " | ".join(f"{t:,.0f}" for _, t, _ in hg) + " |",
                "| history table $/month | " + " | ".join(usd(c) for _, _, c in hg) + " |"]
        s2 = "2 timeline (history API)"
        cold = sum(l.usd for l in b.lines if l.scenario == s2 and l.item.startswith("history"))
        out += ["", f"Scenario 2 costs {usd(b.total(s2))}/month, of which the cold tier (history table, its build, compaction "
                f"and reads) {usd(cold)}. Keeping every event's item in DynamoDB for the lake's {a['retention']['lake_months']:.0f} months "
                f"instead would cost {usd(history_in_dynamodb(a))}/month in DynamoDB storage alone."]
    out += ["", "Bus and lake ingest, the part that differs between the designs ($/month):", "",
            "| design | 0.1x (1e8 events/day) | 1x | 10x |", "|---|---:|---:|---:|"]
    rows: dict[str, list[float]] = {}
    for f in (0.1, 1.0, 10.0):
        for k, v in bus_and_ingest_alternatives(scaled(a, f)).items():
            rows.setdefault(k, []).append(v)
    for k, vs in rows.items():
        out.append(f"| {k} | " + " | ".join(usd(v) for v in vs) + " |")
    out += ["", "Totals of the whole platform at each volume: " + ", ".join(
        f"{f:g}x {usd(ours(scaled(a, f)).total())}" for f in (0.1, 1.0, 10.0)) + "."]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assumptions", type=Path, default=DEFAULT_ASSUMPTIONS)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="change one assumption")
    ap.add_argument("--markdown", action="store_true", help="the tables of docs/architecture.md")
    ap.add_argument("--json", action="store_true", help="every line as JSON")
    args = ap.parse_args()
    a = load(args.assumptions, args.set)
    if args.markdown:
        print(markdown(a))
        return 0
    b = ours(a)
    if args.json:
        print(json.dumps({"lines": [l.__dict__ for l in b.lines], "total": b.total(),
                          "alternatives": bus_and_ingest_alternatives(a)}, indent=2))
        return 0
    print(f"monthly bill, {a['workload']['events_per_day']:,.0f} events/day of {a['workload']['event_bytes']:,.0f} B ({a['prices']['as_of']})")
    for s in b.scenarios():
        print(f"\n{s}: {usd(b.total(s))}")
        for l in (l for l in b.lines if l.scenario == s):
            print(f"  {l.item:<52} {usd(l.usd):>10}   {l.how}")
    print(f"\ntotal: {usd(b.total())} / month")
    print("\nbus + lake ingest, by design:")
    for k, v in bus_and_ingest_alternatives(a).items():
        print(f"  {k:<45} {usd(v):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
