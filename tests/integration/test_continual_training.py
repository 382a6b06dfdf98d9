"""``metarec train --follow``: the trainer reads the topic and publishes versions that workers can load."""

from __future__ import annotations

import pytest

from models.data.synthetic import generate
from models.serving.recommender import Recommender
from schemas.decode import encode
from stream import versions
from stream.replay import interactions
from stream.topics import app_topic_specs, ensure_topics
from stream.trainer import FollowPlan, follow
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration


def test_follow_publishes_a_version_trained_on_the_topic(settings, tmp_path):
    ensure_topics(settings.kafka_config(), app_topic_specs(settings))
    log = generate(seed=11, n_users=60, n_items=80, mean_events=10).sorted_by_time()
    records = list(interactions(log, id_prefix="f"))
    produce(settings.brokers, settings.interactions_topic, [(r.user_id.encode(), encode(r)) for r in records])
    plan = FollowPlan(out=tmp_path / "models", interval_s=1.0, min_events=len(records), steps=5,
                      time_budget_s=30.0, rounds=2)
    published = follow(settings, plan)
    assert len(published) == 2
    assert versions.resolve(plan.out) == published[-1], "LATEST names the newest version"
    model = Recommender.load(published[-1])
    assert set(model.item_ids) >= {r.item_id for r in records}, "the version knows the items it was trained on"
    assert Recommender.load(published[0]).version != model.version
