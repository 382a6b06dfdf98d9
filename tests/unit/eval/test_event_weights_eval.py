"""The offline evaluation takes the operator's event weights as the worker does: the metarec methods build
their requests and feed their item statistics with them; a type that is not a positive adapts nothing."""

from __future__ import annotations

from models.core.targets import event_weights
from models.eval import registry
from models.eval.metarec_methods import MetarecMethod, Schedule, TrainingCache
from models.eval.methods import Query
from tests.unit.eval.conftest import planted_stream

TINY = Schedule(steps=2, retrain_steps=1, retrain_every=1000)


def test_the_registry_hands_the_weights_to_the_metarec_methods_only():
    weights = event_weights({"view": 0.2})
    method = registry.build("metarec", 0, event_weights=weights)
    assert isinstance(method, MetarecMethod) and method.schedule.event_weights == weights
    assert registry.build("metarec", 0).schedule.event_weights is None
    registry.build("popularity", 0, event_weights=weights)  # the peers take every event as they always did


def test_requests_and_statistics_follow_the_weights():
    log = planted_stream(seed=2, users=8)  # every event a view
    weighted = MetarecMethod("metarec", 0, Schedule(**{**TINY.__dict__, "event_weights": event_weights(
        {"view": 0.2})}), TrainingCache())
    weighted.fit_prefix(log)
    for u, i, v, t, ts in zip(log.users.tolist()[:5], log.items.tolist()[:5], log.values.tolist()[:5],
                              log.types.tolist()[:5], log.ts.tolist()[:5]):
        weighted.learn(u, i, v, t, ts)
    request = weighted._request(Query(int(log.users[0]), set()))
    assert request.support and {t for _, t in request.support} == {0.2}
    assert [e[4] for e in weighted.unobserved] == [0.2] * 5

    nothing = MetarecMethod("metarec", 0, Schedule(**{**TINY.__dict__, "event_weights": event_weights(
        {"purchase": 1.0})}), TrainingCache())
    nothing.fit_prefix(log)
    nothing.learn(int(log.users[0]), int(log.items[0]), float(log.values[0]), int(log.types[0]), float(log.ts[0]))
    assert nothing._request(Query(int(log.users[0]), set())).support == [] and nothing.unobserved == []
