"""Does a worker's cost grow with the catalogue or the user base? One run, one machine, every figure.

For each catalogue size (``--catalogues``) one worker drains a Zipf backlog (events/s at saturation, model
time per served user) and then serves a fixed offered load (p99 event -> list at 100 events/s, and at 1,000
events/s for the first size). For each user-base size (``--user-bases``) a worker drains a backlog that
touches that many users (uniform activity, so nearly every user is new), and its RSS growth and RocksDB bytes
per user are measured; the RSS slope per user is fitted over those points. The Faust take-only ceiling and
the raw passthrough are measured once on the first backlog, and the quality of retrieval against full
scoring is read from the stream evaluation results (``--quality``: files written by
``metarec evaluate --protocol stream --methods metarec,metarec-full``).

    python -m bench.scaling                     # writes bench/results/scaling.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import throughput
from bench.common import RESULTS, catalogue, machine_info, train_checkpoint, write_results, zipf_events
from stream.broker import EmbeddedBroker

log = logging.getLogger("bench.scaling")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalogues", default="1000,10000,100000", help="catalogue sizes (items)")
    p.add_argument("--events", type=int, default=60_000, help="backlog per catalogue size")
    p.add_argument("--users", type=int, default=30_000, help="user population of the catalogue backlogs")
    p.add_argument("--user-bases", default="10000,100000,1000000", help="users touched by the memory runs")
    p.add_argument("--events-per-user", type=float, default=1.2, help="memory runs: events per touched user")
    p.add_argument("--latency-s", type=float, default=20.0)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--device", default="cpu", help="cpu or cuda (writes scaling-cuda.json by default)")
    p.add_argument("--quality", nargs="*", type=Path, default=[RESULTS / "stream-ml-100k.json",
                                                               RESULTS / "stream-hetrec2011-lastfm-2k.json"])
    p.add_argument("--budget-s", type=float, default=1800.0, help="longest a memory run may take")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cache", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra worker environment")
    return p.parse_args(argv)


def throughput_args(args: argparse.Namespace, items: int, **over: Any) -> argparse.Namespace:
    """The arguments ``bench.throughput``'s phases read, for one configuration."""
    ns = throughput.parse_args([])
    ns.items, ns.events, ns.users, ns.latency_s = items, args.events, args.users, args.latency_s
    ns.train_steps, ns.cache, ns.label = args.train_steps, args.cache, f"scaling-{items}"
    ns.env = [f"METAREC_DEVICE={args.device}", *args.env]
    for key, value in over.items():
        setattr(ns, key, value)
    return ns


def catalogue_point(args: argparse.Namespace, items: int, first: bool, tmp: Path) -> dict[str, Any]:
    """Saturation and latency of one catalogue size (and, for the first, the ceilings)."""
    ns = throughput_args(args, items, rates="100,1000" if first else "100",
                         ceilings="take" if first else "", ceiling_events=args.events)
    checkpoint = train_checkpoint(ns.cache / f"model-{items}", n_items=items, steps=ns.train_steps)
    backlog = zipf_events(ns.events, ns.users, catalogue(items), user_exponent=ns.user_exponent, seed=1,
                          id_prefix="s")
    out: dict[str, Any] = {}
    with EmbeddedBroker() as broker:
        settings = throughput.fresh_settings(broker.bootstrap, ns.partitions)
        if first:
            out.update(throughput.ceilings(ns, broker.bootstrap, settings, backlog, tmp))
        else:  # the backlog still has to be in the topic before the worker starts
            from bench.kafka_tools import produce_all

            produce_all(broker.bootstrap, settings.interactions_topic, backlog.keys, backlog.values)
        out.update(throughput.saturation_phase(ns, broker.bootstrap, settings, checkpoint, backlog, tmp))
    with EmbeddedBroker() as broker:
        out.update(throughput.latency_phases(ns, broker.bootstrap, checkpoint, tmp))
    sat = out["saturation"]
    served = sat.get("model_batches") and sat.get("mean_users_per_model_batch")
    users_served = sat["model_batches"] * sat["mean_users_per_model_batch"] if served else None
    point = {
        "events_per_s": sat["events_per_s"],
        "events_per_worker_cpu_s": sat["events_per_worker_cpu_s"],
        "model_us_per_user": round(1e6 * sat["model_seconds"] / users_served, 1) if users_served else None,
        "mean_users_per_model_batch": sat.get("mean_users_per_model_batch"),
        "p99_ms_at_100_per_s": out["latency_ms"]["100"]["p99"],
        "complete": sat["complete"],
        "detail": out,
    }
    if first:
        point["latency_ms_at_1000_per_s"] = out["latency_ms"].get("1000")
    return point


def user_point(args: argparse.Namespace, users: int, tmp: Path) -> dict[str, Any]:
    """A worker drains a backlog touching ``users`` users (uniform activity): its RSS and RocksDB per user."""
    items = int(args.catalogues.split(",")[0])
    events = int(users * args.events_per_user)
    ns = throughput_args(args, items, users=users, events=events, user_exponent=0.0, rates="", ceilings="",
                         timeout_s=args.budget_s, label=f"scaling-users-{users}")
    checkpoint = train_checkpoint(ns.cache / f"model-{items}", n_items=items, steps=ns.train_steps)
    started = time.monotonic()
    backlog = zipf_events(events, users, catalogue(items), user_exponent=0.0, seed=2, id_prefix="m")
    with EmbeddedBroker() as broker:
        settings = throughput.fresh_settings(broker.bootstrap, ns.partitions)
        from bench.kafka_tools import produce_all

        produce_all(broker.bootstrap, settings.interactions_topic, backlog.keys, backlog.values)
        out = throughput.saturation_phase(ns, broker.bootstrap, settings, checkpoint, backlog, tmp)
    mem, sat = out["memory"], out["saturation"]
    return {
        "users_touched": backlog.n_users,
        "events": events,
        "rss_mib": round(mem["rss_bytes_end"] / 2**20, 1),
        "rss_growth_mib": round((mem["rss_bytes_end"] - sat["rss_bytes_at_start"]) / 2**20, 1),
        "rocksdb_bytes_per_user": mem["rocksdb_live_bytes_per_user"],
        "events_per_s": sat["events_per_s"],
        "complete": sat["complete"],
        "seconds": round(time.monotonic() - started, 1),
        "detail": out,
    }


def rss_slope(points: dict[str, dict[str, Any]]) -> float | None:
    """Bytes of worker RSS per touched user, least squares over the memory runs."""
    xs = [p["users_touched"] for p in points.values() if p.get("complete")]
    ys = [p["rss_mib"] * 2**20 for p in points.values() if p.get("complete")]
    if len(xs) < 2:
        return None
    return round(float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0]), 1)


def quality(paths: list[Path]) -> dict[str, Any]:
    """HR@10 of metarec retrieving vs scoring every item, from stream evaluation results (same run, seed)."""
    out: dict[str, Any] = {}
    for path in paths:
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        methods = data.get("methods", {})
        if "metarec" not in methods or "metarec-full" not in methods:
            continue
        first10 = data.get("first_ten_hr@10", {})
        out[data["dataset"]] = {
            variant: {"hr@10_all": methods[name]["hr@10"]["all"], "hr@10_first10": first10.get(name)}
            for variant, name in (("retrieval", "metarec"), ("full", "metarec-full"))
        }
        out[data["dataset"]]["candidate_recall"] = methods["metarec"].get("candidate_recall")
        out[data["dataset"]]["seed"] = data.get("seed", data.get("seeds"))
        out[data["dataset"]]["source"] = str(path.relative_to(ROOT)) if path.is_absolute() else str(path)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    began = time.monotonic()
    result: dict[str, Any] = {
        "command": "python -m bench.scaling " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "device": args.device,
        "catalogue": {},
        "users": {},
    }
    out = args.out or RESULTS / ("scaling-cuda.json" if args.device == "cuda" else "scaling.json")
    with tempfile.TemporaryDirectory(prefix="metarec-scaling-") as tmp:
        for n, items in enumerate(int(x) for x in args.catalogues.split(",") if x):
            point = catalogue_point(args, items, n == 0, Path(tmp) / f"c{items}")
            result["catalogue"][str(items)] = point
            if n == 0:
                result["faust_take_only_events_per_s"] = point["detail"]["faust_ceiling"]["take"].get("events_per_s")
                result["passthrough_events_per_s"] = point["detail"]["passthrough_events_per_s"]
                result["latency_ms_at_1000_per_s"] = point.get("latency_ms_at_1000_per_s")
            write_results(out, result)  # partial results survive a later failure
        for users in (int(x) for x in args.user_bases.split(",") if x):
            result["users"][str(users)] = user_point(args, users, Path(tmp) / f"u{users}")
            result["rss_bytes_per_user_slope"] = rss_slope(result["users"])
            write_results(out, result)
    result["quality"] = quality(args.quality)
    sizes = sorted(result["catalogue"], key=int)
    if len(sizes) > 1:
        result["events_per_s_ratio_largest_to_smallest"] = round(
            result["catalogue"][sizes[-1]]["events_per_s"] / result["catalogue"][sizes[0]]["events_per_s"], 3)
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    result["wall_s"] = round(time.monotonic() - began, 1)
    write_results(out, result)
    return result


if __name__ == "__main__":
    main()
