"""``metarec report``: live series derived from real metrics, and a self-contained page."""

from __future__ import annotations

import json
import math

from prometheus_client import generate_latest

from stream.metrics import Metrics
from stream.report import build_report, latency_percentiles, online_hit_rate, sample_metrics


def scripted(metrics: Metrics, steps):
    """A fetch that applies the next step to the metrics, then returns the exposition text."""
    it = iter(steps)

    def fetch() -> str:
        next(it, lambda: None)()
        return generate_latest(metrics.registry).decode()

    return fetch


def test_online_hit_rate_and_latency_come_from_interval_deltas():
    m = Metrics()

    def first():
        m.online_trials.labels(bucket="0", model_version="v1").inc(10)
        m.online_hits.labels(bucket="0", model_version="v1").inc(1)

    def second():
        m.online_trials.labels(bucket="0", model_version="v1").inc(10)
        m.online_hits.labels(bucket="0", model_version="v1").inc(5)
        for _ in range(100):
            m.latency.observe(0.004)

    clock = iter(range(100)).__next__
    samples = sample_metrics(scripted(m, [first, second]), duration_s=1, every_s=0, clock=clock, wait=lambda s: None)
    hr = online_hit_rate(samples)
    assert hr["0"][0] == 0.5, "the second interval had 5 hits in 10 trials"
    assert math.isnan(hr["50+"][0])
    p50 = latency_percentiles(samples)[0.5][0]
    assert 2.5 <= p50 <= 5.0, p50


def page_for(tmp_path, name: str, result: dict) -> str:
    """The report page built from one result file ``name`` holding ``result``, beside 50 sampled events."""
    path = tmp_path / name
    path.write_text(json.dumps(result))
    m = Metrics()
    samples = sample_metrics(scripted(m, [lambda: m.events.labels(result="processed").inc(50)]), duration_s=0,
                             every_s=0, wait=lambda s: None)
    return build_report(tmp_path / "r.html", [path], samples).read_text()


def test_page_is_self_contained_with_tables_and_plots(tmp_path):
    result = {"dataset": "tiny", "events": 10, "methods": {
        "metarec": {"hr@10": {"all": 0.3, "0": 0.2, "1-4": 0.3, "5-9": 0.3, "10-49": 0.4, "50+": 0.4},
                    "ndcg@10": {}, "mae": 0.7, "rmse": 0.9, "mae_on_scale": 0.6875, "rmse_on_scale": 1.0},
        "popularity": {"hr@10": {"all": 0.1, "0": 0.1, "1-4": 0.1, "5-9": 0.1, "10-49": 0.1, "50+": 0.1},
                       "ndcg@10": {}, "mae": None, "rmse": None}}}
    page = page_for(tmp_path, "stream-tiny.json", result)
    assert page.count("data:image/png;base64,") == 5
    assert "<th>metarec</th>" in page and "0.3000" in page
    assert "<td>0.6875</td>" in page, "the on-scale MAE is shown beside the MAE as predicted"
    assert "http" not in page.replace("http-equiv", ""), "no external resources"


def test_cold_start_section_shows_the_on_scale_mae(tmp_path):
    result = {"dataset": "tiny", "methods": {
        "metarec": {"new_user": {"mae": 0.8, "rmse": 1.0, "ndcg@3": 0.7, "mae_on_scale": 0.7625}}}}
    page = page_for(tmp_path, "coldstart-tiny.json", result)
    assert "<td>0.8000 / 0.7625 / 0.7000</td>" in page
