"""The model's hyperparameters: one frozen dataclass, handed to every module and saved beside the weights.

A checkpoint is only meaningful together with the configuration that shaped its tensors, so the configuration
travels as JSON in the checkpoint's ``config.json`` and is validated when it is read back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

OBJECTIVES: tuple[str, ...] = ("rating", "implicit")
"""``rating``: scores are ratings, losses squared errors. ``implicit``: scores are "will interact" logits."""
RATING_LOSSES: tuple[str, ...] = ("mse", "l1", "huber")
"""The rating model's outer (query) loss. MAE is minimised by the conditional median, not the mean: ``l1``
(or ``huber``, quadratic within ``HUBER_DELTA`` of the target) trains for it. The inner loop stays squared
error: a user's few ratings move their head smoothly, and the serving kernel writes its gradient out."""
HUBER_DELTA = 0.5


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides the shapes of the meta-parameters and how adaptation and training run."""

    n_items: int
    n_item_features: int = 0  # item side features (multi-hot categories, ...); 0 = ids only
    n_user_features: int = 0  # user side features offsetting the head's init; 0 = none
    n_context: int = 0  # C: stream context features per (user, item) (models.features.item_stats); 0 = none
    adapt_taste: bool = True  # adapt the taste vector w; False: only b and the context weights a adapt
    dim: int = 64  # item id embedding / feature projection width
    head_dim: int = 64  # H: width of the item vectors z_i and of the user head w
    inner_steps: int = 5  # gradient steps of per-user adaptation
    inner_lr_init: float = 0.1  # initial Meta-SGD step size of every head parameter
    first_order: bool = False  # drop second-order terms in the outer gradient (cheaper, a little worse)
    objective: str = "implicit"
    rating_loss: str = "mse"  # outer loss of the rating objective (RATING_LOSSES); mse = older checkpoints
    n_negatives: int = 64  # sampled negatives per user in the implicit inner-loop loss
    negative_power: float = 0.0  # inner-loop negatives drawn by popularity ** power (0: uniform); see core.adapt
    rating_min: float = 1.0
    rating_max: float = 5.0
    max_support: int = 50  # most recent events a user adapts on
    support_prior: float = 4.0  # support loss is normalised by (events + prior): few events, smaller moves
    query_size: int = 8  # events after the cut that a training task is scored on
    cold_share: float = 0.5  # share of training tasks cut within a user's first few events (models.training.train)
    id_dropout: float = 0.15  # share of items trained features-only, so new items get useful vectors
    outer_lr: float = 1e-2
    weight_decay: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.rating_loss not in RATING_LOSSES:
            raise ValueError(f"rating_loss must be one of {RATING_LOSSES}, got {self.rating_loss!r}")
        for name in ("n_items", "dim", "head_dim", "max_support", "query_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_item_features", "n_user_features", "n_context", "inner_steps", "n_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.objective == "implicit" and self.n_negatives < 1:
            raise ValueError("the implicit objective needs n_negatives >= 1")
        if not self.rating_min < self.rating_max:
            raise ValueError(f"rating_min ({self.rating_min}) must be below rating_max ({self.rating_max})")
        if self.negative_power < 0:
            raise ValueError(f"negative_power must not be negative, got {self.negative_power}")
        if self.support_prior < 0:
            raise ValueError(f"support_prior must not be negative, got {self.support_prior}")
        if not 0.0 <= self.cold_share <= 1.0:
            raise ValueError(f"cold_share must be in [0, 1], got {self.cold_share}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")

    @property
    def head_size(self) -> int:
        """Length of a flattened head: w (H + C,) (taste, then context weights a) then b (1,)."""
        return self.head_dim + self.n_context + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Strict: unknown keys are refused (a config from another program should not half-load)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("ModelConfig JSON must be an object")
        return cls.from_dict(data)
