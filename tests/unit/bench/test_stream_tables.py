"""The README's stream tables show the results file's own figures and say how each interval reads."""

from __future__ import annotations

import pytest

from bench.stream_tables import intervals_table, methods_table, replace_block, targets


def _block(hr: float, mae: float | None = None) -> dict:
    return {"hr@10": {"all": hr}, "mae": mae, "mae_on_scale": None}


RESULT = {
    "methods": {"session-knn": _block(0.19), "river-biasedmf": _block(0.04, 0.744),
                "metarec": _block(0.2, 0.73)},
    "first_ten_hr@10": {"session-knn": 0.36, "river-biasedmf": 0.04, "metarec": 0.39},
    "best_peer": "session-knn", "best_rating_peer": "river-biasedmf",
    "ci95": {"metarec_minus_best_peer": {"all": [0.004, 0.016], "first10": [-0.01, 0.07]},
             "adapted_minus_no_adapt": {"all": [-0.003, -0.001], "first10": [-0.02, 0.01]},
             "first10_ratio_to_best_peer": [0.97, 1.083, 1.2],
             "mae_metarec_minus_best_rating_peer": {"as_predicted": [-0.02, -0.01],
                                                    "on_scale": [-0.01, 0.0]}},
}


def test_rows_carry_the_files_figures_and_mark_metarec_and_the_best_peer():
    rows = methods_table(RESULT)
    assert "| **metarec** | 0.2000 | 0.3900 | 0.730 | – |" in rows
    assert "| session-knn (best peer) | 0.1900 | 0.3600 | – | – |" in rows


def test_intervals_read_above_below_or_level():
    text = "\n".join(intervals_table(RESULT))
    assert ("| metarec − best peer (session-knn) | [0.0040, 0.0160] | above 0 | [-0.0100, 0.0700] | level"
            in text)
    assert "| metarec − metarec without adaptation | [-0.0030, -0.0010] | below 0 |" in text
    assert "1.083× (95% interval 0.970–1.200)" in text
    assert "(river-biasedmf): [-0.0200, -0.0100] as predicted (below 0)" in text


def test_the_readme_block_is_replaced_between_its_markers_only():
    text = "intro\n<!-- stream-x:begin -->\nold\n<!-- stream-x:end -->\noutro\n"
    expected = "intro\n<!-- stream-x:begin -->\nnew\n<!-- stream-x:end -->\noutro\n"
    assert replace_block(text, "x", "new") == expected
    with pytest.raises(SystemExit, match="no <!-- stream-y:begin -->"):
        replace_block(text, "y", "new")


def test_targets_read_off_the_intervals():
    rows = "\n".join(targets(RESULT))
    assert "| first-10 HR@10 ≥ 1.15× the best peer, interval's lower end above 1.0 | not met |" in rows
    assert "| best overall: metarec − best peer, lower end above 0 | **met** |" in rows
    assert "| adapted − no adaptation on the first 10 events, lower end above 0 | not met |" in rows
    assert "| MAE below the best online rating peer, upper end below 0 | **met** |" in rows
