"""The RDP accountant of the Poisson-sampled Gaussian mechanism, against closed forms and Opacus 1.6."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.training.dp_accounting import (
    DEFAULT_ORDERS,
    RDPAccountant,
    epsilon,
    epsilon_from_rdp,
    noise_for_epsilon,
    rdp_sampled_gaussian,
)

# (q, sigma, steps) -> epsilon at delta 1e-5, computed with opacus.accountants.analysis.rdp (compute_rdp and
# get_privacy_spent, Opacus 1.6.0) over DEFAULT_ORDERS: an independent implementation of the same analysis.
OPACUS_1_6 = {
    (0.01, 1.1, 1000): 1.7117700912203435,
    (0.05, 0.8, 300): 10.439686376769522,
    (0.2, 2.0, 50): 3.8493652544047365,
    (0.001, 0.6, 10000): 3.3218995971280134,
}


@pytest.mark.parametrize("key", sorted(OPACUS_1_6))
def test_epsilon_matches_opacus(key) -> None:
    q, sigma, steps = key
    assert epsilon(q, sigma, steps, 1e-5) == pytest.approx(OPACUS_1_6[key], rel=1e-7)


def test_without_sampling_it_is_the_gaussian_mechanism() -> None:
    orders = (1.5, 2.0, 8.0, 32.0)
    assert np.allclose(rdp_sampled_gaussian(1.0, 1.3, orders), [a / (2 * 1.3**2) for a in orders])


def test_integer_and_fractional_orders_agree_where_they_meet() -> None:
    near = rdp_sampled_gaussian(0.05, 1.0, (2.0, 2.0000001, 3.0, 2.9999999))
    assert near[0] == pytest.approx(near[1], rel=1e-5) and near[2] == pytest.approx(near[3], rel=1e-5)


def test_sampling_amplifies_privacy_and_more_steps_or_less_noise_cost_more() -> None:
    base = epsilon(0.05, 1.0, 100, 1e-5)
    assert epsilon(0.01, 1.0, 100, 1e-5) < base
    assert epsilon(0.05, 1.0, 400, 1e-5) > base
    assert epsilon(0.05, 2.0, 100, 1e-5) < base


def test_noise_calibration_reaches_the_target_and_no_less_noise_would() -> None:
    for target in (1.0, 8.0):
        sigma = noise_for_epsilon(target, 1e-5, 0.05, 200, tol=0.01)
        assert epsilon(0.05, sigma, 200, 1e-5) <= target
        assert epsilon(0.05, sigma - 0.02, 200, 1e-5) > target


def test_the_accountant_composes_its_steps() -> None:
    acc = RDPAccountant()
    for _ in range(30):
        acc.step(0.1, 1.2)
    acc.step(0.05, 0.9, steps=20)
    assert acc.steps == 50
    direct = 30 * rdp_sampled_gaussian(0.1, 1.2) + 20 * rdp_sampled_gaussian(0.05, 0.9)
    assert acc.epsilon(1e-6) == pytest.approx(epsilon_from_rdp(direct, 1e-6, DEFAULT_ORDERS)[0])
    assert RDPAccountant().epsilon(1e-6) == 0.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        rdp_sampled_gaussian(1.5, 1.0)
    with pytest.raises(ValueError):
        rdp_sampled_gaussian(0.1, 0.0)
    with pytest.raises(ValueError):
        epsilon(0.1, 1.0, 10, 0.0)
    assert math.isfinite(epsilon(0.1, 1.0, 10, 1e-5))
