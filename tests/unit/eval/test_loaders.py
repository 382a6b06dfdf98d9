"""The Last.fm and event-file loaders on tiny files written here (never the real data)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from models.data.generic import EventFileError, load_event_file
from models.data.lastfm import load_lastfm
from models.data.registry import load_dataset


def day(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=timezone.utc).timestamp()


def write(path: Path, lines: list[str], encoding: str = "utf-8", newline: str = "\r\n") -> None:
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())


@pytest.fixture
def lastfm_dir(tmp_path: Path) -> Path:
    write(tmp_path / "user_artists.dat", ["userID\tartistID\tweight", "2\t51\t13883", "2\t52\t11690",
                                          "2\t53\t5", "7\t51\t40", "9\t52\t1"])
    write(tmp_path / "artists.dat", ["id\tname\turl\tpictureURL", "51\tDuran Duran\thttp://x\thttp://y",
                                     "52\tMorcheeba\thttp://x\thttp://y", "53\tAir\thttp://x\thttp://y"],
          newline="\n")
    write(tmp_path / "tags.dat", ["tagID\ttagValue", "1\tnew wave", "2\ttrip-hop", "3\tchanson française"],
          encoding="iso-8859-1")
    write(tmp_path / "user_taggedartists.dat", [
        "userID\tartistID\ttagID\tday\tmonth\tyear",
        "2\t52\t2\t1\t4\t2009",
        "2\t52\t2\t1\t3\t2009",  # the earlier tag day wins for (2, 52)
        "2\t51\t1\t10\t6\t2010",
        "7\t53\t3\t5\t5\t1956",  # clipped to 2005-01-01
        "7\t51\t1\t5\t5\t2008",
    ])
    return tmp_path


def test_lastfm_events_values_and_ordering_rule(lastfm_dir):
    log = load_lastfm(lastfm_dir, seed=1)
    assert (len(log), log.n_users, log.n_items, log.explicit) == (5, 3, 3, False)
    assert log.values.tolist() == [13883, 11690, 5, 40, 1]  # raw play counts
    assert {log.types.tolist()[0]} == {5} and set(log.types.tolist()) == {5}  # "play"
    ts = dict(zip(zip(log.users.tolist(), log.items.tolist()), log.ts.tolist()))
    u2, u7, u9 = (log.user_ids.index(u) for u in ("2", "7", "9"))
    a51, a52, a53 = (log.item_ids.index(a) for a in ("51", "52", "53"))
    assert day(2009, 3, 1) <= ts[(u2, a52)] < day(2009, 3, 2)  # the earliest tag day of the pair
    assert day(2010, 6, 10) <= ts[(u2, a51)] < day(2010, 6, 11)
    assert day(2009, 3, 1) <= ts[(u2, a53)] < day(2010, 6, 11)  # untagged: inside the user's tagging span
    assert day(2005, 1, 1) <= ts[(u7, a51)] < day(2008, 5, 6)  # user 7's span starts at the clipped date
    assert day(2005, 1, 1) <= ts[(u9, a52)] < day(2010, 6, 11)  # no tags: the dataset's span


def test_lastfm_is_deterministic_per_seed(lastfm_dir):
    assert np.array_equal(load_lastfm(lastfm_dir, seed=3).ts, load_lastfm(lastfm_dir, seed=3).ts)
    assert not np.array_equal(load_lastfm(lastfm_dir, seed=3).ts, load_lastfm(lastfm_dir, seed=4).ts)


def test_lastfm_side_data(lastfm_dir):
    log = load_lastfm(lastfm_dir, top_tags=2)
    assert sorted(log.item_feature_names) == ["tag:new wave", "tag:trip-hop"]  # the two most used of three
    assert log.item_features.shape == (3, 2)
    a52 = log.item_ids.index("52")
    assert log.item_text[a52] == "Morcheeba | trip-hop"
    assert log.item_features[a52, log.item_feature_names.index("tag:trip-hop")] == 1.0
    assert log.item_features[a52].sum() == 1.0
    full = load_lastfm(lastfm_dir)
    assert "chanson française" in full.item_text[full.item_ids.index("53")]  # latin-1 decoded


def test_lastfm_via_the_registry_and_missing_files(lastfm_dir, tmp_path):
    assert len(load_dataset(lastfm_dir)) == 5
    (lastfm_dir / "artists.dat").unlink()
    with pytest.raises(FileNotFoundError, match="artists.dat"):
        load_lastfm(lastfm_dir)


def test_csv_with_ratings_and_iso_times(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user,item,timestamp,value\na,x,10,4\nb,x,2021-01-01T00:00:00Z,2.5\na,y,30,\n")
    log = load_event_file(path)
    assert (len(log), log.n_users, log.n_items, log.explicit) == (3, 2, 2, True)
    assert log.ts[1] == day(2021, 1, 1)
    assert log.values[0] == 4.0 and math.isnan(log.values[2])


def test_jsonl_with_types_is_implicit(tmp_path):
    path = tmp_path / "events.jsonl"
    rows = [{"user": "a", "item": "x", "timestamp": 1, "type": "click"},
            {"user": "a", "item": "y", "timestamp": 2, "type": "purchase", "value": 20.0}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    log = load_event_file(path)
    assert log.explicit is False
    assert log.types.tolist() == [1, 3]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.csv", "user,item\na,x\n", "timestamp"),
    ("b.csv", "user,item,timestamp,type\na,x,1,like\n", "type 'like'"),
    ("c.csv", "user,item,timestamp\na,x,yesterday\n", "timestamp 'yesterday'"),
    ("d.jsonl", '{"user": "a", "item": "x"}\n', "missing field(s) timestamp"),
    ("e.jsonl", "not json\n", "not JSON"),
    ("f.csv", "user,item,timestamp\n", "no events"),
])
def test_bad_event_files_say_what_is_wrong(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(EventFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_event_file(path)


def test_side_tables_beside_the_event_file(tmp_path):
    (tmp_path / "ev.csv").write_text("user,item,timestamp\na,x,1\nb,y,2\nb,z,3\n")
    (tmp_path / "ev.items.csv").write_text("item,title,categories\nx,Film X,Drama|Comedy\ny,Film Y,Drama\n"
                                           "w,Unused,Horror\n")
    (tmp_path / "ev.users.csv").write_text("user,age,country\na,31,fr\nb,,de\n")
    log = load_event_file(tmp_path / "ev.csv")
    assert log.item_text == ["Film X", "Film Y", ""]
    assert log.item_feature_names == ["category:Comedy", "category:Drama"]
    assert log.item_features.tolist() == [[1, 1], [0, 1], [0, 0]]
    assert log.user_feature_names == ["age", "country=de", "country=fr"]
    assert log.user_features.tolist() == [[31, 0, 1], [0, 1, 0]]


def test_side_table_without_its_key_column(tmp_path):
    (tmp_path / "ev.csv").write_text("user,item,timestamp\na,x,1\n")
    (tmp_path / "items.csv").write_text("id,title\nx,X\n")
    with pytest.raises(EventFileError, match="lacks column 'item'"):
        load_event_file(tmp_path / "ev.csv", items_path=tmp_path / "items.csv")
