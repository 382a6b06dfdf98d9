"""Peers of metarec under the stream protocol: one model per file, each behind ``StreamMethod``.

Each file declares its model and the small ``GRID`` of settings the validation step
(``models.eval.tuning``) chooses from on the warm-up alone. The peers that cannot score a user without history
(item-kNN, session-kNN, EASE, SASRec) fall back on position-conditioned popularity
(``position_popularity.PositionCounts``): what users take at step n of their own history.
"""
