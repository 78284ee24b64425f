"""MovieLens importers: the real 100K folder, and 1M / latest in their exact formats."""

from __future__ import annotations

import pandas as pd
import pytest

from recsys_hyper.cli import main
from recsys_hyper.data import load_dataset
from recsys_hyper.data.movielens import detect_variant, read_movielens
from recsys_hyper.errors import RecsysHyperError


def test_ml100k_imports_with_its_exact_counts(ml100k_dir, tmp_path, capsys):
    out = tmp_path / "ml"
    assert main(["data", "import-movielens", str(ml100k_dir), "--out", str(out)]) == 0
    assert "100,000 interactions, 943 users, 1,682 items" in capsys.readouterr().out
    ds = load_dataset(out)
    assert len(ds.interactions) == 100_000
    assert ds.interactions["user_id"].nunique() == 943 and len(ds.users) == 943
    assert ds.interactions["item_id"].nunique() == 1682 and len(ds.items) == 1682
    assert set(ds.users.columns) == {"user_id", "age", "gender", "occupation", "zip_prefix"}
    toy = ds.items.set_index("item_id").loc[1]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995
    assert list(toy["genres"]) == ["Animation", "Children's", "Comedy"]
    assert list(ds.items.set_index("item_id").loc[267, "genres"]) == []     # "unknown" genre, no date
    assert pd.isna(ds.items.set_index("item_id").loc[267, "year"])
    first = ds.users.set_index("user_id").loc[1]
    assert (first["age"], first["gender"], first["occupation"], first["zip_prefix"]) == (24, "M", "technician", "8")
    assert ds.interactions["rating"].between(1, 5).all()


def _write_1m(root):
    root.mkdir()
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (root / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach: The Movie (1996)::Animation|Children's|Musical\n"
        "5::Caf\xe9 (1999)::(no genres listed)\n".encode("latin-1"))
    return root


def test_ml1m_format(tmp_path):
    src = _write_1m(tmp_path / "ml-1m")
    assert detect_variant(src) == "1m"
    ds = read_movielens(src)
    assert len(ds.interactions) == 3 and ds.interactions["item_id"].dtype == "int64"
    u = ds.users.set_index("user_id")
    assert u.loc[1, "occupation"] == "K-12 student" and u.loc[2, "occupation"] == "self-employed"
    assert u.loc[2, "age"] == 56 and u.loc[1, "zip_prefix"] == "4"
    it = ds.items.set_index("item_id")
    assert it.loc[661, "title"] == "James and the Giant Peach: The Movie (1996)"   # ':' inside the title
    assert list(it.loc[661, "genres"]) == ["Animation", "Children's", "Musical"] and it.loc[661, "year"] == 1996
    assert list(it.loc[5, "genres"]) == [] and it.loc[5, "title"] == "Café (1999)"


def test_ml_latest_format(tmp_path):
    src = tmp_path / "ml-latest-small"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
                                     "2,1,2.5,1445714835\n")
    (src / "movies.csv").write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                                    '3,"Grumpier Old Men, The (1995)",Comedy|Romance\n')
    ds = read_movielens(src)
    assert detect_variant(src) == "latest" and ds.users is None
    assert ds.interactions["rating"].tolist() == [4.0, 4.5, 2.5]
    assert ds.items.set_index("item_id").loc[3, "title"] == "Grumpier Old Men, The (1995)"


def test_unrecognised_folder_is_explained(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RecsysHyperError, match=r"no MovieLens variant recognised \(found: notes.txt\).*u.data"):
        detect_variant(tmp_path)


def test_bad_source_data_writes_nothing(tmp_path, capsys):
    src = _write_1m(tmp_path / "ml-1m")
    (src / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::-978302109\n")   # negative time
    out = tmp_path / "out"
    assert main(["data", "import-movielens", str(src), "--out", str(out)]) == 2
    assert "column 'timestamp'" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ml-1m"]
