"""METAREC_EVENT_WEIGHTS: parsed once in Settings, it decides the support targets and what the item
statistics count, through the same request code the offline evaluation calls."""

from __future__ import annotations

import pytest

from models.serving.requests import build_request
from schemas.decode import encode
from schemas.records import Interaction
from stream.pipeline import RawMessage, Rules, decode, plan
from stream.settings import Settings, SettingsError
from stream.state import UserState

TS = 1_700_000_000.0


def test_settings_parse_weights_and_refuse_typos_at_start_up():
    s = Settings.from_env({"METAREC_EVENT_WEIGHTS": "view:0.2, click:1,cart:2,purchase:3"})
    assert s.weights == (("cart", 2.0), ("click", 1.0), ("purchase", 3.0), ("view", 0.2))
    assert Settings().weights is None
    for bad in ("view=0.2", "view:x", "teleport:1", "view:-1"):
        with pytest.raises(SettingsError, match="METAREC_EVENT_WEIGHTS"):
            Settings.from_env({"METAREC_EVENT_WEIGHTS": bad})


def test_the_weights_set_support_targets_and_leave_other_types_out():
    weights = Settings.from_env({"METAREC_EVENT_WEIGHTS": "view:0.2,purchase:3"}).weights
    support = [("a", "view", None, TS), ("b", "click", None, TS), ("c", "purchase", None, TS)]
    assert build_request("u", support, "implicit", weights=weights).support == [("a", 0.2), ("c", 3.0)]
    assert build_request("u", support, "implicit").support == [("a", 0.25), ("b", 0.5), ("c", 1.0)]


def _message(n: int, kind: str) -> RawMessage:
    event = Interaction(event_id=f"e{n}", user_id="u", item_id=f"i{n}", type=kind, ts=TS + n)
    return RawMessage(b"u", encode(event), "interactions", 0, n, TS + n)


def test_the_statistics_learn_each_positive_with_its_weight_and_no_other_type():
    rules = Rules(weights=Settings.from_env({"METAREC_EVENT_WEIGHTS": "view:0.2,purchase:3"}).weights)
    messages = [_message(0, "view"), _message(1, "click"), _message(2, "purchase")]
    decoded = decode(messages, rules, TS + 10)
    batch = plan(decoded, {"u": UserState()}, rules, "implicit")
    (learned,) = batch.learned
    assert learned.events == (("i0", TS, None, 0.2), ("i2", TS + 2, None, 3.0))
    assert batch.users["u"].state.seen == ["i0", "i1", "i2"], "every event is still remembered as seen"
    default = plan(decode(messages, Rules(), TS + 10), {"u": UserState()}, Rules(), "implicit")
    assert [e[0] for e in default.learned[0].events] == ["i0", "i1", "i2"]
