"""metarec's settings under the stream protocol: ModelConfig overrides reach the models it trains."""

from __future__ import annotations

from models.eval.metarec_methods import MetarecMethod, Schedule, TrainingCache
from models.eval.stream_protocol import plan_stream
from tests.unit.eval.conftest import planted_stream
from tests.unit.eval.test_metarec_methods import rated


def test_config_overrides_reach_the_ranking_and_the_rating_model():
    plan = plan_stream(rated(planted_stream(seed=4, users=10)), 0.3)
    cache = TrainingCache()
    schedule = Schedule(steps=1, retrain_steps=1, choose_taste=False,
                        overrides=(("inner_steps", 2), ("support_prior", 3.0)),
                        rating_overrides=(("inner_steps", 7),))
    method = MetarecMethod("metarec", 0, schedule, cache)
    method.fit_prefix(plan.prefix)
    ranking, rating = method.model.config, method.rater.config
    assert (ranking.inner_steps, ranking.support_prior, ranking.objective) == (2, 3.0, "implicit")
    assert (rating.inner_steps, rating.objective) == (7, "rating")
    plain = MetarecMethod("metarec", 0, Schedule(steps=1, retrain_steps=1, choose_taste=False), cache)
    plain.fit_prefix(plan.prefix)
    assert plain.model.config.inner_steps == 5 and plain.trained is not method.trained  # not the cached one
