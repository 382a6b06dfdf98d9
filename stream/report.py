"""``metarec report``: one self-contained HTML page for people who would rather look than read.

It draws from two sources: evaluation results (the JSON files ``metarec evaluate`` writes) and a running worker's
``/metrics``, sampled for a while. From the samples it plots, over time: online HR@10 by history length, latency
percentiles, throughput, and drift (PSI). Plots are PNGs embedded as data URIs, so the page is one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

BUCKETS = ("0", "1-4", "5-9", "10-49", "50+")
Fetch = Callable[[], str]


@dataclass
class Sample:
    """One scrape: seconds since the first, and every sample as (name, labels) -> value."""

    t: float
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        """Sum of the series named ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.values.items() if n == name and want <= set(lab))

    def series(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, lab), v in self.values.items():
            if n == name:
                key = dict(lab).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out


def parse(text: str, t: float) -> Sample:
    sample = Sample(t)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            sample.values[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return sample


def http_fetch(url: str, timeout: float = 5.0) -> Fetch:
    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a URL the user gave
            return response.read().decode()

    return fetch


def sample_metrics(fetch: Fetch, duration_s: float, every_s: float, clock: Callable[[], float] = time.monotonic,
                   wait: Callable[[float], None] = time.sleep) -> list[Sample]:
    """Scrape ``fetch`` every ``every_s`` seconds for ``duration_s`` seconds (at least twice)."""
    start = clock()
    samples = [parse(fetch(), 0.0)]
    while clock() - start < duration_s or len(samples) < 2:
        wait(every_s)  # the sampling interval of a time series, not synchronisation
        samples.append(parse(fetch(), clock() - start))
    return samples


# --- series derived from scrapes -------------------------------------------------------------------------------
def online_hit_rate(samples: list[Sample]) -> dict[str, list[float]]:
    """Per history bucket, HR@10 of the lists we sent, over each interval between scrapes."""
    out: dict[str, list[float]] = {b: [] for b in BUCKETS}
    for a, b in zip(samples, samples[1:]):
        for bucket in BUCKETS:
            trials = b.get("metarec_online_trials_total", bucket=bucket) - a.get("metarec_online_trials_total",
                                                                                  bucket=bucket)
            hits = b.get("metarec_online_hits_total", bucket=bucket) - a.get("metarec_online_hits_total",
                                                                              bucket=bucket)
            out[bucket].append(hits / trials if trials > 0 else float("nan"))
    return out


def latency_percentiles(samples: list[Sample], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[float, list[float]]:
    """Latency percentiles (ms) per interval, interpolated within histogram buckets as Prometheus does."""
    name = "metarec_event_to_recommendation_seconds_bucket"
    out: dict[float, list[float]] = {q: [] for q in qs}
    for a, b in zip(samples, samples[1:]):
        cum_b, cum_a = b.series(name, "le"), a.series(name, "le")
        bounds = sorted((float(le), cum_b[le] - cum_a.get(le, 0.0)) for le in cum_b)
        total = bounds[-1][1] if bounds else 0.0
        for q in qs:
            out[q].append(_quantile(bounds, total, q) * 1000.0 if total > 0 else float("nan"))
    return out


def _quantile(bounds: list[tuple[float, float]], total: float, q: float) -> float:
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in bounds:
        if count >= rank:
            if np.isinf(le):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span > 0 else 0.0)
        prev_le, prev_count = le, count
    return prev_le


def rate(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [(b.get(name, **labels) - a.get(name, **labels)) / max(b.t - a.t, 1e-9) for a, b in zip(samples, samples[1:])]


def drift(samples: list[Sample]) -> dict[str, list[float]]:
    signals = sorted({dict(lab).get("signal", "") for s in samples for (n, lab) in s.values if n == "metarec_drift_psi"})
    return {sig: [s.get("metarec_drift_psi", signal=sig) for s in samples[1:]] for sig in signals}


# --- the page -------------------------------------------------------------------------------------------------
def build_report(out: Path, evaluations: list[Path], samples: list[Sample] | None) -> Path:
    """Write the HTML page to ``out`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    parts = ["<h1>metarec report</h1>", f"<p>generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}</p>"]
    for path in evaluations:
        parts += _evaluation_section(path)
    if samples:
        parts += _live_section(samples)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>metarec report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def _evaluation_section(path: Path) -> list[str]:
    result = json.loads(path.read_text())
    methods: dict[str, dict] = result.get("methods", {})
    parts = [f"<h2>Evaluation: {html.escape(str(result.get('dataset', path.stem)))} ({html.escape(path.name)})</h2>"]
    if methods and "hr@10" in next(iter(methods.values())):
        keys = ["all", *BUCKETS]
        rows = "".join(
            f"<tr><th>{html.escape(m)}</th>" + "".join(f"<td>{_fmt(r['hr@10'].get(k))}</td>" for k in keys)
            + f"<td>{_fmt(r.get('mae'))}</td><td>{_fmt(r.get('mae_on_scale'))}</td></tr>"
            for m, r in methods.items())
        parts.append("<table><tr><th>method</th>" + "".join(f"<th>HR@10 {k}</th>" for k in keys)
                     + f"<th>MAE</th><th>MAE on the rating scale</th></tr>{rows}</table>")
        parts.append(_figure(lambda ax: _bars(ax, methods, keys), "HR@10 by history length (events before)"))
    elif methods:  # cold-start shape: method -> scenario -> metrics
        scenarios = sorted({s for r in methods.values() for s in r})
        rows = "".join(f"<tr><th>{html.escape(m)}</th>" + "".join(
            f"<td>{_fmt(r.get(s, {}).get('mae'))} / {_fmt(r.get(s, {}).get('mae_on_scale'))} / "
            f"{_fmt(r.get(s, {}).get('ndcg@3'))}</td>" for s in scenarios)
            + "</tr>" for m, r in methods.items())
        parts.append("<table><tr><th>method (MAE / on the rating scale / nDCG@3)</th>"
                     + "".join(f"<th>{s}</th>" for s in scenarios)
                     + f"</tr>{rows}</table>")
    return parts


def _live_section(samples: list[Sample]) -> list[str]:
    t = [s.t for s in samples[1:]]
    hr, lat, psi = online_hit_rate(samples), latency_percentiles(samples), drift(samples)
    thr = rate(samples, "metarec_events_total", result="processed")
    return [
        f"<h2>Live worker ({len(samples)} scrapes over {samples[-1].t:.0f} s)</h2>",
        _figure(lambda ax: _lines(ax, t, {f"history {b}": v for b, v in hr.items()}, "online HR@10"),
                "Online HR@10 by history length over time"),
        _figure(lambda ax: _lines(ax, t, {f"p{int(q * 100)}": v for q, v in lat.items()}, "ms"),
                "Event to recommendation latency percentiles"),
        _figure(lambda ax: _lines(ax, t, {"events/s": thr}, "events/s"), "Throughput"),
        _figure(lambda ax: _lines(ax, t, {f"PSI {k}": v for k, v in psi.items()}, "PSI"), "Drift over time"),
    ]


def _figure(draw: Callable, title: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    draw(ax)
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'></figure>"


def _bars(ax, methods: dict[str, dict], keys: list[str]) -> None:
    width = 0.8 / max(len(methods), 1)
    for i, (name, r) in enumerate(methods.items()):
        ax.bar(np.arange(len(keys)) + i * width, [r["hr@10"].get(k) or 0.0 for k in keys], width, label=name)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    ax.legend(fontsize=7, ncol=3)


def _lines(ax, t: list[float], series: dict[str, list[float]], ylabel: str) -> None:
    for name, values in series.items():
        ax.plot(t, values, label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=7)


def _fmt(value: object) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
