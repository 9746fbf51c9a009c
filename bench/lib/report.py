"""Turns the measurements of scripts/bench-decode into its printed lines and JSON record.

    python3 report.py decode RUN_DIR OUT_JSON
    python3 report.py filter-cost RUN_DIR OUT_JSON

RUN_DIR holds the JSON each measurement printed: env.json, run.json (size, commands), and
for decode sluice_all.json, sluice_skip.json, python.json,
mariadb_binlog.json (a list of runs); for filter-cost filter_cost.out/.json.
One line per figure, always with the peer measured in the same run and the ratio.
"""

import json
import statistics
import sys
from pathlib import Path

GOAL_ROWS_PER_S = 1_000_000


def load(run_dir, name):
    return json.loads((run_dir / name).read_text())


def decode(run_dir, out_path):
    env = load(run_dir, "env.json")
    run = load(run_dir, "run.json")
    all_ = load(run_dir, "sluice_all.json")
    skip = load(run_dir, "sluice_skip.json")
    py = load(run_dir, "python.json")
    native_runs = load(run_dir, "mariadb_binlog.json")

    bytes_ = all_["bytes"]
    rows = all_["rows"]
    native_wall = statistics.median(r["wall_s"] for r in native_runs)
    native_cpu = statistics.median(r["cpu_s"] for r in native_runs)

    sluice_rps = all_["rows_per_s"]
    py_rps = py["rows"] / py["wall_s"]
    sluice_mbps = all_["mb_per_s"]
    native_mbps = bytes_ / 1e6 / native_wall
    skip_mbps = skip["mb_per_s"]
    skip_rps = rows / skip["wall_s"]

    figures = {
        "decode": {
            "sluice_rows_per_s": sluice_rps,
            "python_mysql_replication_rows_per_s": py_rps,
            "ratio": sluice_rps / py_rps,
            "sluice_rows_per_cpu_s": all_["rows_per_cpu_s"],
            "python_mysql_replication_rows_per_cpu_s": py["rows"] / py["cpu_s"],
            "rows_sluice": rows,
            "rows_python_mysql_replication": py["rows"],
        },
        "decode_native": {
            "sluice_mb_per_s": sluice_mbps,
            "mariadb_binlog_mb_per_s": native_mbps,
            "ratio": sluice_mbps / native_mbps,
            "sluice_mb_per_cpu_s": all_["mb_per_cpu_s"],
            "mariadb_binlog_mb_per_cpu_s": bytes_ / 1e6 / native_cpu,
        },
        "skip_unselected": {
            "skip_unselected_mb_per_s": skip_mbps,
            "skip_unselected_rows_per_s": skip_rps,
            "sluice_decode_all_mb_per_s": sluice_mbps,
            "ratio": skip_mbps / sluice_mbps,
        },
        "goal": {
            "sluice_rows_per_s": sluice_rps,
            "goal_rows_per_s": GOAL_ROWS_PER_S,
            "met": sluice_rps >= GOAL_ROWS_PER_S,
        },
    }
    lines = [
        "decode workload=oltp_write_only sluice_rows_per_s={:.0f} python_mysql_replication_rows_per_s={:.0f} ratio={:.1f}".format(
            sluice_rps, py_rps, sluice_rps / py_rps
        ),
        "decode_native workload=oltp_write_only mariadb_binlog_mb_per_s={:.1f} sluice_mb_per_s={:.1f} ratio={:.2f}".format(
            native_mbps, sluice_mbps, sluice_mbps / native_mbps
        ),
        "skip_unselected workload=oltp_write_only skip_unselected_mb_per_s={:.1f} skip_unselected_rows_per_s={:.0f} "
        "sluice_decode_all_mb_per_s={:.1f} ratio={:.1f}".format(skip_mbps, skip_rps, sluice_mbps, skip_mbps / sluice_mbps),
        "decode_goal sluice_rows_per_s={:.0f} goal_rows_per_s={} met={}".format(
            sluice_rps, GOAL_ROWS_PER_S, "yes" if sluice_rps >= GOAL_ROWS_PER_S else "no"
        ),
        "decode_input bytes={} files={} events={} rows={} row_events={} python_rows={} sluice_runs={} "
        "sluice_cpu_s={:.3f} python_cpu_s={:.3f} mariadb_binlog_cpu_s={:.3f}".format(
            bytes_, len(all_["files"]), all_["events"], rows, all_["row_events"], py["rows"], all_["runs"],
            all_["cpu_s"], py["cpu_s"], native_cpu,
        ),
    ]
    if py["rows"] != rows:
        lines.append(f"warning: python-mysql-replication saw {py['rows']} rows, sluice {rows}")
    for line in lines:
        print(line)
    record = {
        "benchmark": "decode",
        "env": env,
        "run": run,
        "figures": figures,
        "lines": lines,
        "raw": {
            "sluice_all": all_,
            "sluice_skip": skip,
            "python_mysql_replication": py,
            "mariadb_binlog": native_runs,
        },
    }
    Path(out_path).write_text(json.dumps(record, indent=2) + "\n")


def filter_cost(run_dir, out_path):
    env = load(run_dir, "env.json")
    run = load(run_dir, "run.json")
    fc = load(run_dir, "filter_cost.json")
    lines = [l for l in (run_dir / "filter_cost.out").read_text().splitlines() if l.startswith("filter_cost")]
    for line in lines:
        print(line)
    record = {
        "benchmark": "filter-cost",
        "env": env,
        "run": run,
        "figures": {
            "filter_cost": {
                "decode_apply_cpu_s": fc["decode_apply_cpu_s"],
                "filter_transform_cpu_s": fc["filter_transform_cpu_s"],
                "share_percent": fc["share_percent"],
                "goal_percent": fc["goal_percent"],
                "met": fc["goal_met"],
            }
        },
        "lines": lines,
        "raw": fc,
    }
    Path(out_path).write_text(json.dumps(record, indent=2) + "\n")


GOAL_NATIVE4_RATIO = 5.0
GOAL_CEILING_SHARE = 0.70
GOAL_LAG_P99_MS = 500.0


def apply(run_dir, out_path):
    """scripts/bench-apply: catch-up beside the native replica and the bulk ceilings, lag run."""
    env = load(run_dir, "env.json")
    run = load(run_dir, "run.json")
    native = {r: load(run_dir, f"native-{r}.json") for r in ("R0", "R4")}
    targets = ("mariadb", "postgres", "sqlite")
    catchup = {t: load(run_dir, f"catchup-{t}.json") for t in targets}
    bulk = {t: load(run_dir, f"bulk-{t}.json") for t in targets}
    lag = load(run_dir, "lag.json")
    rows = bulk["mariadb"]["rows"]
    txns = run["txns"]
    met = lambda ok: "yes" if ok else "no"
    rps = lambda wall: rows / wall
    native0, native4 = rps(native["R0"]["wall_s"]), rps(native["R4"]["wall_s"])
    lines = []
    figures = {"rows": rows, "txns": txns, "native0_rows_per_s": native0, "native4_rows_per_s": native4}
    s_m = rps(catchup["mariadb"]["wall_s"])
    ratio = s_m / native4
    lines.append(
        f"catchup workload=oltp_write_only txns={txns} rows={rows} target=mariadb sluice_rows_per_s={s_m:.0f} "
        f"native0_rows_per_s={native0:.0f} native4_rows_per_s={native4:.0f} ratio_native0={s_m / native0:.2f} "
        f"ratio={ratio:.2f} goal={GOAL_NATIVE4_RATIO:.0f}x met={met(ratio >= GOAL_NATIVE4_RATIO)}"
    )
    figures["mariadb_vs_native4"] = ratio
    for t in targets:
        s_t = rps(catchup[t]["wall_s"])
        ceil = bulk[t]["rows_per_s"]
        share = s_t / ceil
        figures[f"{t}_rows_per_s"] = s_t
        figures[f"{t}_bulk_ceiling_rows_per_s"] = ceil
        figures[f"{t}_share_of_ceiling"] = share
        lines.append(
            f"catchup_ceiling target={t} sluice_rows_per_s={s_t:.0f} bulk_ceiling_rows_per_s={ceil:.0f} "
            f"ratio={share:.2f} goal={GOAL_CEILING_SHARE:.2f} met={met(share >= GOAL_CEILING_SHARE)}"
        )
    rep = lag["lag"]
    ms = lambda us: us / 1000.0
    native_max = txns / min(native["R0"]["wall_s"], native["R4"]["wall_s"])
    lines.append(
        f"lag target=mariadb source={rep['source']} offered_txn_per_s={run['offered_rate_txn_per_s']} "
        f"native_max_txn_per_s={native_max:.0f} seconds={run['lag_seconds']} p50_ms={ms(rep['p50_us']):.1f} "
        f"p99_ms={ms(rep['p99_us']):.1f} p999_ms={ms(rep['p999_us']):.1f} max_ms={ms(rep['max_us']):.1f} "
        f"samples={rep['samples']} goal_p99_ms={GOAL_LAG_P99_MS:.0f} met={met(ms(rep['p99_us']) < GOAL_LAG_P99_MS)}"
    )
    figures["lag"] = rep
    for t in targets:
        c = catchup[t]
        per_m = c["cpu_s"] / rows * 1e6
        figures[f"{t}_cpu_s_per_million_rows"] = per_m
        figures[f"{t}_peak_rss_mib"] = c["peak_rss_kib"] / 1024
        server = c.get("target_server_cpu_s")
        server_text = "" if server is None else f" target_server_cpu_s={server:.2f}"
        if "context_switches" in c:
            server_text += f" context_switches={c['context_switches']}"
        lines.append(
            f"resources target={t} sluice_cpu_s={c['cpu_s']:.2f} cpu_s_per_million_rows={per_m:.2f} "
            f"peak_rss_mib={c['peak_rss_kib'] / 1024:.1f} wall_s={c['wall_s']:.2f}{server_text}"
        )
    lines.append(
        f"catchup_native detail: R0 wall_s={native['R0']['wall_s']:.2f} server_cpu_s={native['R0']['server_cpu_s']:.2f}; "
        f"R4 wall_s={native['R4']['wall_s']:.2f} server_cpu_s={native['R4']['server_cpu_s']:.2f}; "
        f"durability: innodb_flush_log_at_trx_commit=1 (replicas, MariaDB target), PostgreSQL fsync=on "
        f"synchronous_commit=on, SQLite WAL synchronous=NORMAL"
    )
    for line in lines:
        print(line)
    record = {
        "benchmark": "apply",
        "env": env,
        "run": run,
        "figures": figures,
        "lines": lines,
        "raw": {"native": native, "catchup": catchup, "bulk": bulk, "lag": lag},
    }
    Path(out_path).write_text(json.dumps(record, indent=2) + "\n")


def main():
    kind, run_dir, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if kind == "decode":
        decode(run_dir, out)
    elif kind == "filter-cost":
        filter_cost(run_dir, out)
    elif kind == "apply":
        apply(run_dir, out)
    else:
        raise SystemExit(f"unknown report {kind}")


if __name__ == "__main__":
    main()
