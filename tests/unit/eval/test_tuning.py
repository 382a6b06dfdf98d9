"""Settings are chosen on the warm-up alone: what is tried and picked; the scored events decide nothing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.data.events import EventLog
from models.eval import registry
from models.eval.baselines import Popularity
from models.eval.registry import METHODS, Entry
from models.eval.stream_protocol import plan_stream, shuffle_ties
from models.eval.stream_runner import run_stream
from models.eval.tuning import choose, chosen_setting, tune, tuned_names
from tests.unit.eval.conftest import make_log, planted_stream
from tests.unit.eval.test_baselines import RandomRanker


def test_choose_tries_every_setting_and_picks_the_best():
    plan = plan_stream(planted_stream(seed=1), 0.5)
    grid = [{"popular": False}, {"popular": True}]
    record = choose(lambda s: Popularity(seed=0) if s["popular"] else RandomRanker(seed=0), grid, plan, False)
    assert record["picked"] == {"popular": True} and record["grid"] == grid
    assert record["scores"][1] > record["scores"][0] and len(record["seconds"]) == 2


def test_choose_by_mae_picks_the_lowest_error():
    class Constant(RandomRanker):
        def __init__(self, value: float) -> None:
            super().__init__(0)
            self.value = value

        def predict_rating(self, user: int, item: int) -> float | None:
            return self.value

    log = make_log([(f"u{n % 3}", f"i{n}", float(n), 4.0) for n in range(20)], explicit=True)
    grid = [{"v": 1.0}, {"v": 4.0}, {"v": 3.0}]
    record = choose(lambda s: Constant(s["v"]), grid, plan_stream(log, 0.5), True)
    assert record["picked"] == {"v": 4.0} and record["criterion"] == "mae" and record["scores"][1] == 0.0


class Spy(RandomRanker):
    """Records the latest timestamp it was given, fitted or learned: what part of the stream it read."""

    instances: list["Spy"] = []

    def __init__(self, seed: int = 0, **setting: object) -> None:
        super().__init__(seed)
        self.latest = -math.inf
        Spy.instances.append(self)

    def fit_prefix(self, log: EventLog) -> None:
        super().fit_prefix(log)
        self.latest = max(self.latest, float(log.ts.max(initial=-math.inf)))

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.latest = max(self.latest, ts)


def test_tuning_reads_only_the_warm_up_and_the_final_replay_reads_it_all(monkeypatch, tmp_path: Path):
    Spy.instances = []
    spy = Entry(lambda seed, s: Spy(seed, **s), grid=({"a": 1}, {"a": 2}, {"a": 3}))
    monkeypatch.setitem(registry.METHODS, "spy", spy)
    log = planted_stream(seed=5)
    path = tmp_path / "planted.csv"
    path.write_text("user,item,timestamp\n" + "".join(
        f"{log.user_ids[u]},{log.item_ids[i]},{t}\n" for u, i, t in zip(log.users, log.items, log.ts)))
    result = run_stream(path, out=None, seed=3, methods=["spy"])
    ordered = shuffle_ties(log.sorted_by_time(), 3)
    warm_end = float(ordered.ts[result["warmup_events"] - 1])
    trials, final = Spy.instances[:3], Spy.instances[3]
    assert len(Spy.instances) == 4
    assert all(t.latest <= warm_end for t in trials)  # no trial saw a scored event
    assert final.latest == float(ordered.ts[-1])
    assert len(result["tuning"]["spy"]["by_seed"][0]["scores"]) == 3


def test_every_tuned_method_tries_the_same_number_of_settings_but_the_costly_ones_fewer():
    sizes = {name: len(entry.grid) for name, entry in METHODS.items() if not entry.settings_of}
    cheap = {n: s for n, s in sizes.items() if s > 1 and not METHODS[n].tune_once}
    assert set(cheap.values()) == {8} and len(cheap) >= 8
    assert {n for n, e in METHODS.items() if e.tune_once} == {"metarec", "sasrec"}  # a full training a trial
    assert sizes["metarec"] == 4 and len(METHODS["metarec"].rating_grid) == 4 and sizes["sasrec"] == 2
    assert len(METHODS["metarec"].grid_for(17_632)) == 2 and METHODS["metarec"].grid_for(1682) == \
        METHODS["metarec"].grid
    assert {n for n, s in sizes.items() if s == 1} == {"popularity", "item-knn"}  # nothing to choose


def test_peers_with_a_fallback_get_the_position_popularity_pick_and_ablations_metarec_s():
    prefix = plan_stream(planted_stream(seed=2), 0.3).prefix
    names = ["item-knn-pos", "position-popularity", "popularity"]
    assert tuned_names(["metarec-no-adapt", *names]) == ["position-popularity", "metarec", "item-knn-pos",
                                                         "popularity"]
    assert tuned_names(["ease"]) == ["position-popularity", "ease"]  # tuned for its pick, though not listed
    choices = tune(prefix, names, seed=0)
    picked = choices["position-popularity"]["picked"]
    assert choices["item-knn-pos"]["fixed"] == {"fallback": picked}
    assert chosen_setting("item-knn-pos", choices)["fallback"] == picked
    fake = {"metarec": {"picked": {"id_dropout": 0.5}, "rating": {"picked": {"rating_loss": "l1"}}}}
    assert chosen_setting("metarec-finetune", fake) == {"id_dropout": 0.5, "rating": {"rating_loss": "l1"}}
    assert chosen_setting("ease", {}) == {}  # untuned: the defaults


def test_shuffle_ties_reorders_only_events_of_the_same_second():
    log = make_log([(f"u{n}", f"i{n}", float(n // 4)) for n in range(40)])  # ten seconds, four events each
    orders = [shuffle_ties(log, seed).users.tolist() for seed in (0, 1, 0)]
    assert orders[0] == orders[2] and orders[0] != orders[1]
    for order in orders:
        seconds = range(0, 40, 4)
        assert [sorted(order[s: s + 4]) for s in seconds] == [list(range(s, s + 4)) for s in seconds]
    assert np.all(np.diff(shuffle_ties(log, 5).ts) >= 0)


@pytest.mark.parametrize("name", ["metarec", "metarec-no-adapt"])
def test_metarec_settings_reach_its_schedule(name):
    from models.eval.metarec_methods import schedule_for

    setting = {"adapt_taste": True, "id_dropout": 0.5, "support_prior": 4.0, "rating": {"rating_loss": "mse"}}
    method = registry.build(name, 0, setting)
    assert method.schedule == schedule_for(setting)
    assert method.schedule.choose_taste is False and method.schedule.adapt_taste is True
    assert dict(method.schedule.overrides) == {"id_dropout": 0.5, "support_prior": 4.0}
    assert dict(method.schedule.rating_overrides) == {"rating_loss": "mse"}


def test_overrides_reach_the_trained_config_and_the_rating_trial_only_rates():
    from models.eval.metarec_methods import TrainingCache, rating_trial

    events = planted_stream(seed=4, users=10)
    trained, _ = TrainingCache().get(events, 1, 0, None, None, "implicit",
                                     (("adapt_taste", True), ("id_dropout", 0.5), ("support_prior", 4.0)))
    cfg = trained.config
    assert (cfg.id_dropout, cfg.support_prior, cfg.adapt_taste) == (0.5, 4.0, True)
    trial = rating_trial(0, {"rating_loss": "mse", "weight_decay": 1e-5})
    assert trial.ranks is False and trial.schedule.objective == "rating"
    assert dict(trial.schedule.overrides) == {"rating_loss": "mse", "weight_decay": 1e-5}
