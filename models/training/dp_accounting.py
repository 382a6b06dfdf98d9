"""User-level differential privacy: the per-user clipping rule and an RDP accountant for what it costs.

DP meta-training (:mod:`models.training.dp_train`) treats one *user* as the unit of privacy: each step samples users by
Poisson sampling with rate ``q``, clips every sampled user's whole meta-gradient to L2 norm ``C``, sums, and
adds
Gaussian noise N(0, (sigma C)^2) per coordinate. Adding or removing one user then changes the noised sum by at
most ``C``: the sampled Gaussian mechanism, composed over the steps.

The accountant tracks Rényi differential privacy (Mironov, "Rényi Differential Privacy", CSF 2017) of the
sampled Gaussian mechanism, computed as in Mironov, Talwar and Zhang, "Rényi Differential Privacy of the
Sampled
Gaussian Mechanism" (arXiv:1908.10530, 2019): the closed binomial sum for integer orders (their Section 3.2),
the two-sided series with Gaussian tails for fractional orders (Section 3.3). RDP composes by addition over
steps, and is turned into (epsilon, delta)-DP with the conversion of Balle et al., "Hypothesis Testing
Interpretations and Renyi Differential Privacy" (AISTATS 2020, Theorem 21), minimised over the orders. This is
the analysis behind Opacus's ``RDPAccountant``; it is written here so metarec needs no extra dependency, and
the
unit tests pin it against values of the known closed forms and of Opacus 1.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256]
)
"""Rényi orders the bound is minimised over (fractional near 1, where small epsilons are found)."""


# --- clipping
# ---------------------------------------------------------------------------------------------------
def per_user_norms(grads: Sequence[Tensor]) -> Tensor:
    """L2 norm of each user's whole gradient, over all parameters: tensors (B, ...) -> (B,)."""
    squares = [g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]  # each (B,)
    return torch.stack(squares).sum(0).sqrt()


def clip_per_user(grads: Sequence[Tensor], bound: float) -> tuple[list[Tensor], Tensor]:
    """Scale each user's gradient (all parameters together) to L2 norm at most ``bound``.

    Returns the clipped per-user gradients and the norms before clipping (B,). Scaling by
    ``min(1, C / norm)`` keeps the direction; the small epsilon only guards a zero gradient.
    """
    if bound <= 0:
        raise ValueError(f"clipping bound must be positive, got {bound}")
    norms = per_user_norms(grads)  # (B,)
    scale = (bound / (norms + 1e-12)).clamp(max=1.0)  # (B,)
    clipped = [g * scale.reshape(-1, *([1] * (g.dim() - 1))) for g in grads]
    return clipped, norms


def noisy_sum(
    clipped: Sequence[Tensor], bound: float, noise_multiplier: float, generator: torch.Generator | None = None
) -> list[Tensor]:
    """Sum over users plus N(0, (noise_multiplier * bound)^2) per coordinate: (B, ...) -> (...)."""
    out = []
    for g in clipped:
        total = g.sum(0)
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype, device="cpu").to(
            total.device
        )
        out.append(total + noise_multiplier * bound * noise)
    return out


# --- Rényi DP of the sampled Gaussian mechanism
# --------------------------------------------------------------
def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    if lo == -math.inf:
        return hi
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b."""
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    return a + math.log1p(-math.exp(b - a))


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    """log A_alpha for integer alpha: log sum_k C(alpha, k) q^k (1-q)^(alpha-k) e^((k^2-k)/(2 sigma^2))."""
    total = -math.inf
    for k in range(alpha + 1):
        log_coef = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        term = log_coef + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
        total = _log_add(total, term)
    return total


def _log_a_frac(q: float, sigma: float, alpha: float, max_terms: int = 1_000_000) -> float:
    """log A_alpha for fractional alpha: the two-sided series of Mironov et al. 2019, Section 3.3.

    Summed in float64 chunks of terms (torch), because for large sigma and large q the series decays slowly
    (thousands of terms) and a term-by-term loop takes seconds per order. Terms are summed until a whole chunk
    is below exp(-30) relative to nothing (as in the paper's reference code).
    """
    dt = torch.float64
    z0 = sigma**2 * math.log(1.0 / q - 1.0) + 0.5
    log_q, log_1q = math.log(q), math.log1p(-q)
    parts: dict[str, list[Tensor]] = {"pos0": [], "neg0": [], "pos1": [], "neg1": []}
    start, chunk = 0, 128
    while start < max_terms:
        i = torch.arange(start, start + chunk, dtype=dt)  # (C,)
        j = alpha - i
        log_coef = math.lgamma(alpha + 1) - torch.lgamma(i + 1) - torch.lgamma(j + 1)  # log |C(alpha, i)|
        negatives = torch.clamp(i - math.floor(alpha) - 1, min=0)  # factors (alpha - m) < 0 among m < i
        positive = negatives.remainder(2) == 0
        log_s0 = (
            log_coef
            + i * log_q
            + j * log_1q
            + (i * i - i) / (2 * sigma**2)
            + torch.special.log_ndtr(-(i - z0) / sigma)
        )  # log(0.5 erfc((i - z0) / (sqrt(2) sigma)))
        log_s1 = (
            log_coef
            + j * log_q
            + i * log_1q
            + (j * j - j) / (2 * sigma**2)
            + torch.special.log_ndtr(-(z0 - j) / sigma)
        )
        for name, terms in (("0", log_s0), ("1", log_s1)):
            parts["pos" + name].append(terms[positive])
            parts["neg" + name].append(terms[~positive])
        if float(torch.maximum(log_s0, log_s1).max()) < -30 and start > alpha:
            break
        start, chunk = start + chunk, min(chunk * 4, 65536)  # most series end in the first chunk

    def total(name: str) -> float:
        terms = torch.cat(parts[name])
        return float(torch.logsumexp(terms, 0)) if len(terms) else -math.inf

    return _log_add(_log_sub(total("pos0"), total("neg0")), _log_sub(total("pos1"), total("neg1")))


def rdp_sampled_gaussian(q: float, sigma: float, orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP of ONE step of the Poisson-sampled Gaussian mechanism at each order: (len(orders),)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"sampling rate must be in [0, 1], got {q}")
    if sigma <= 0:
        raise ValueError(f"noise multiplier must be positive, got {sigma}")
    return np.array(_rdp_cached(float(q), float(sigma), tuple(float(a) for a in orders)))


@lru_cache(maxsize=4096)
def _rdp_cached(q: float, sigma: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    """Per-order RDP of one step; cached because calibration asks for the same (q, sigma) many times."""
    out = np.empty(len(orders))
    for n, alpha in enumerate(orders):
        if alpha <= 1:
            raise ValueError(f"Rényi orders must exceed 1, got {alpha}")
        if q == 0:
            out[n] = 0.0
        elif q == 1.0:
            out[n] = alpha / (2 * sigma**2)  # the plain Gaussian mechanism
        elif float(alpha).is_integer():
            out[n] = _log_a_int(q, sigma, int(alpha)) / (alpha - 1)
        else:
            out[n] = _log_a_frac(q, sigma, float(alpha)) / (alpha - 1)
    return tuple(out.tolist())


def epsilon_from_rdp(
    rdp: np.ndarray, delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> tuple[float, float]:
    """(epsilon, best order) for ``delta`` from accumulated RDP, by Balle et al. 2020's conversion."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    a = np.asarray(orders, np.float64)
    eps = rdp - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(a[best])


def epsilon(
    q: float, sigma: float, steps: int, delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> float:
    """Epsilon after ``steps`` steps at sampling rate ``q`` and noise multiplier ``sigma``, for ``delta``."""
    return epsilon_from_rdp(steps * rdp_sampled_gaussian(q, sigma, orders), delta, orders)[0]


def noise_for_epsilon(
    target_epsilon: float, delta: float, q: float, steps: int, *, tol: float = 0.01
) -> float:
    """The smallest noise multiplier (to ``tol``) whose epsilon after ``steps`` steps is within target."""
    if target_epsilon <= 0:
        raise ValueError(f"target epsilon must be positive, got {target_epsilon}")
    lo, hi = 0.05, 1.0
    while epsilon(q, hi, steps, delta) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(f"epsilon {target_epsilon} unreachable with q={q}, steps={steps}")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if epsilon(q, mid, steps, delta) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class RDPAccountant:
    """Keeps the steps taken (rate, noise) and answers "what epsilon for this delta so far"."""

    orders: tuple[float, ...] = DEFAULT_ORDERS
    history: list[tuple[float, float, int]] = field(default_factory=list)  # (q, sigma, steps)

    def step(self, q: float, sigma: float, steps: int = 1) -> None:
        if self.history and self.history[-1][:2] == (q, sigma):
            q0, s0, n0 = self.history[-1]
            self.history[-1] = (q0, s0, n0 + steps)
        else:
            self.history.append((q, sigma, steps))

    @property
    def steps(self) -> int:
        return sum(n for _q, _s, n in self.history)

    def rdp(self) -> np.ndarray:
        total = np.zeros(len(self.orders))
        for q, sigma, n in self.history:
            total += n * rdp_sampled_gaussian(q, sigma, self.orders)
        return total

    def epsilon(self, delta: float) -> float:
        if not self.history:
            return 0.0
        return epsilon_from_rdp(self.rdp(), delta, self.orders)[0]
