"""The MovieLens loader on tiny hand-written files in both layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data.events import EVENT_TYPES
from models.data.movielens import load_movielens
from models.data.registry import load_dataset

GENRE_FLAGS_COMEDY = "|".join("1" if j == 5 else "0" for j in range(19))  # column 5 = Comedy
GENRE_FLAGS_ACTION_WAR = "|".join("1" if j in (1, 17) else "0" for j in range(19))


def _write_100k(folder: Path) -> Path:
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t4\t900\n2\t10\t2\t800\n1\t20\t5\t1000\n")
    (folder / "u.item").write_bytes(
        (
            f"10|Caf\xe9 (1995)|01-Jan-1995||http://x|{GENRE_FLAGS_COMEDY}\n"
            f"20|Battle (1980)|||http://y|{GENRE_FLAGS_ACTION_WAR}\n"
            f"30|Other (1990)|01-Jan-1990||http://z|{GENRE_FLAGS_COMEDY}\n"
        ).encode("iso-8859-1")
    )
    (folder / "u.user").write_text("1|20|M|writer|55105\n2|60|F|artist|T8H1N\n")
    (folder / "u.occupation").write_text("artist\nwriter\n")
    return folder


def _write_1m(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ratings.dat").write_text("5::7::3::100\n6::8::1::50\n5::8::4::200\n")
    (folder / "movies.dat").write_text("7::Heat (1995)::Action|Crime\n8::Babe (1975)::Comedy\n")
    (folder / "users.dat").write_text("5::F::25::12::02139\n6::M::56::0::K1A0B\n")
    return folder


def test_100k_events_ratings_and_types(tmp_path: Path) -> None:
    log = load_movielens(_write_100k(tmp_path / "ml-100k"))
    assert log.explicit and log.name == "ml-100k"
    assert log.user_ids == ["1", "2"] and log.item_ids == ["10", "20"]
    np.testing.assert_array_equal(log.values, [4, 2, 5])
    np.testing.assert_array_equal(log.ts, [900, 800, 1000])
    assert {EVENT_TYPES[t] for t in log.types} == {"rating"}


def test_100k_item_side_tables(tmp_path: Path) -> None:
    log = load_movielens(_write_100k(tmp_path / "ml-100k"))
    names = log.item_feature_names
    feats = log.item_features
    assert feats.shape == (2, 20) and names[-1] == "year"
    assert feats[0, names.index("genre:Comedy")] == 1 and feats[0].sum() == 1 + feats[0, -1]
    assert feats[1, names.index("genre:Action")] == 1 and feats[1, names.index("genre:War")] == 1
    # only item 10 has a date (1995); item 20's missing date gets the median, i.e. the same year
    assert feats[0, -1] == 0.0 and feats[1, -1] == 0.0
    assert log.item_text[0] == "Caf\xe9 (1995) | Comedy"
    assert log.item_text[1] == "Battle (1980) | Action, War"


def test_100k_user_side_tables(tmp_path: Path) -> None:
    log = load_movielens(_write_100k(tmp_path / "ml-100k"))
    names, feats = log.user_feature_names, log.user_features
    row = {n: feats[0, j] for j, n in enumerate(names)}
    assert row["age"] == 0.0 and row["gender:M"] == 1 and row["occupation:writer"] == 1 and row["zip:5"] == 1
    row2 = {n: feats[1, j] for j, n in enumerate(names)}
    assert row2["age"] == 1.0 and row2["gender:F"] == 1 and row2["occupation:artist"] == 1
    assert row2["zip:other"] == 1
    assert feats.sum(axis=1).tolist() == pytest.approx([3.0, 4.0])


def test_1m_layout(tmp_path: Path) -> None:
    log = load_movielens(_write_1m(tmp_path / "ml-1m"))
    assert log.user_ids == ["5", "6"] and log.item_ids == ["7", "8"]
    np.testing.assert_array_equal(log.values, [3, 1, 4])
    names = log.item_feature_names
    assert names == ["genre:Action", "genre:Comedy", "genre:Crime", "year"]
    np.testing.assert_array_equal(log.item_features, [[1, 0, 1, 1], [0, 1, 0, 0]])
    unames = log.user_feature_names
    assert log.user_features[0, unames.index("occupation:programmer")] == 1
    assert log.user_features[1, unames.index("occupation:other")] == 1
    assert log.item_text == ["Heat (1995) | Action, Crime", "Babe (1975) | Comedy"]


def test_registry_resolves_folder(tmp_path: Path) -> None:
    assert len(load_dataset(_write_1m(tmp_path / "ml-1m"))) == 3


def test_missing_files_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path)
