"""One small meta-trained model on a synthetic stream, shared by the model tests (training costs seconds)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from models.data.events import EventLog
from models.data.synthetic import generate
from models.serving.recommender import Recommender
from models.training.train import default_config, meta_train

TRAIN_USERS = 600  # users 600.. are held out: the model never saw them


@dataclass(frozen=True)
class World:
    log: EventLog  # every user
    train: EventLog  # the users the model was meta-trained on
    held_out: frozenset[int]
    model: Recommender


def small_config(log: EventLog, **overrides):
    return replace(default_config(log), dim=32, head_dim=32, n_negatives=32, max_support=20, **overrides)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tiny tensors gain nothing from threads, and on a shared 2-core machine threads spin against
    each other (a step gets ten times slower); the previous setting comes back after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def world() -> World:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_world()
    finally:
        torch.set_num_threads(threads)


def _train_world() -> World:
    log = generate(n_users=800, n_items=150, n_categories=6, mean_events=25, seed=1)
    train = log.take(np.flatnonzero(log.users < TRAIN_USERS))
    model = meta_train(train, small_config(train), steps=60, batch_users=32, seed=0)
    return World(log, train, frozenset(range(TRAIN_USERS, log.n_users)), model)
