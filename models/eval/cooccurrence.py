"""Moved to ``models.cooccurrence`` (serving's item statistics use it too); kept so old imports still work."""

from models.cooccurrence import (  # noqa: F401
    DENSE_MAX_ITEMS,
    Cooccurrence,
    DenseCooccurrence,
    SparseCooccurrence,
    make_cooccurrence,
)
