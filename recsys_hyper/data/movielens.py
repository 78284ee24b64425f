"""Importers from the public MovieLens formats into the canonical dataset directory.

Detected by the files present in the source folder:

=========  ==========================================  =====================================
variant    files                                       notes
=========  ==========================================  =====================================
100k       ``u.data``, ``u.user``, ``u.item``          tab / ``|`` separated, latin-1
1m         ``ratings.dat``, ``users.dat``, ``movies.dat``  ``::`` separated, latin-1
latest     ``ratings.csv``, ``movies.csv``             CSV with header, UTF-8, no user file
=========  ==========================================  =====================================

Users get ``age``, ``gender``, ``occupation`` and ``zip_prefix`` where the variant has them
(``zip_prefix`` is the first character of the zip code, the US national area: finer prefixes
make users near-unique, which a model memorises). Items get ``title``, ``genres``
(list<string>; "unknown" / "(no genres listed)" become an empty list) and ``year`` (from the
release date or the title; null when absent).

MovieLens' licence forbids redistribution: import from where the data lives, never copy it into
a repository.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RecsysHyperError
from . import schema as S
from .dataset import Dataset, validate_frames, write_dataset

VARIANTS = {
    "100k": ("u.data", "u.user", "u.item"),
    "1m": ("ratings.dat", "users.dat", "movies.dat"),
    "latest": ("ratings.csv", "movies.csv"),
}

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]
NO_GENRE = {"unknown", "(no genres listed)"}

ML1M_OCCUPATIONS = ["other", "academic/educator", "artist", "clerical/admin", "college/grad student",
                    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
                    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
                    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


def detect_variant(src: str | os.PathLike) -> str:
    """Which MovieLens variant ``src`` holds, by its files."""
    root = Path(src)
    if not root.is_dir():
        raise RecsysHyperError(f"{root}: not a directory; pass the folder that holds the MovieLens files")
    for name, files in VARIANTS.items():
        if all((root / f).is_file() for f in files):
            return name
    expected = "; ".join(f"{k}: {', '.join(v)}" for k, v in VARIANTS.items())
    present = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
    raise RecsysHyperError(f"{root}: no MovieLens variant recognised (found: {present}); expected the files of one of "
                           f"{expected}")


def read_movielens(src: str | os.PathLike, variant: str | None = None) -> Dataset:
    """Read a MovieLens folder into a validated :class:`Dataset`."""
    root = Path(src)
    variant = variant or detect_variant(root)
    readers = {"100k": _read_100k, "1m": _read_1m, "latest": _read_latest}
    if variant not in readers:
        raise RecsysHyperError(f"unknown MovieLens variant {variant!r}; choose one of {', '.join(readers)}")
    interactions, users, items = readers[variant](root)
    return validate_frames(interactions, users, items, source=f"MovieLens {variant} at {root}")


def import_movielens(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                     variant: str | None = None) -> Dataset:
    """Read, validate and write a MovieLens folder as a dataset directory (atomically)."""
    ds = read_movielens(src, variant)
    write_dataset(ds, out, overwrite=overwrite)
    return ds


def _read_table(path: Path, what: str, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise RecsysHyperError(f"{path}: cannot be parsed as the MovieLens {what} file ({exc}); "
                               f"check that it is the unmodified file from the MovieLens archive") from exc


def _interaction_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The contract's columns; types are checked and converted by validation."""
    return df[[S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP]]


def _genres_list(names) -> list[str]:
    return [g for g in names if g and g not in NO_GENRE]


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(_YEAR_IN_TITLE, expand=False).astype("Int64")


def _zip_prefix(zips: pd.Series) -> pd.Series:
    return zips.astype(str).str.strip().str[:1].str.upper()


def _read_100k(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = _read_table(root / "u.data", "ratings (u.data)", sep="\t", header=None,
                          names=[S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP])
    users = _read_table(root / "u.user", "users (u.user)", sep="|", header=None,
                        names=[S.USER_ID, "age", "gender", "occupation", "zip"], dtype={"zip": str})
    users = users.assign(zip_prefix=_zip_prefix(users.pop("zip")))
    genre_names = ML100K_GENRES
    if (root / "u.genre").is_file():
        g = _read_table(root / "u.genre", "genres (u.genre)", sep="|", header=None, names=["name", "idx"],
                        encoding="latin-1").dropna()
        genre_names = g.sort_values("idx")["name"].tolist()
    cols = [S.ITEM_ID, "title", "release", "video_release", "url"] + [f"g{i}" for i in range(len(genre_names))]
    items = _read_table(root / "u.item", "items (u.item)", sep="|", header=None, names=cols, encoding="latin-1")
    flags = items[[f"g{i}" for i in range(len(genre_names))]].to_numpy(dtype=bool)
    names = np.array(genre_names, dtype=object)
    items = pd.DataFrame({
        S.ITEM_ID: items[S.ITEM_ID].astype("int64"),
        "title": items["title"].astype(str),
        "genres": [_genres_list(names[row]) for row in flags],
        "year": pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64"),
    })
    return _interaction_frame(ratings), users, items


def _read_dat(path: Path, what: str, names: list[str]) -> pd.DataFrame:
    """``::``-separated files without ``::`` inside fields: split on ':' and keep every other field."""
    df = _read_table(path, what, sep=":", header=None, usecols=list(range(0, 2 * len(names), 2)),
                     encoding="latin-1", dtype={8: str} if "zip" in names else None)  # zip: field 8
    df.columns = names
    return df


def _read_1m(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = _read_dat(root / "ratings.dat", "ratings (ratings.dat)", [S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP])
    users = _read_dat(root / "users.dat", "users (users.dat)", [S.USER_ID, "gender", "age", "occupation", "zip"])
    occ = pd.to_numeric(users["occupation"], errors="coerce").fillna(0).astype(int)
    users = pd.DataFrame({
        S.USER_ID: users[S.USER_ID].astype("int64"),
        "age": users["age"].astype("int64"),
        "gender": users["gender"],
        "occupation": [ML1M_OCCUPATIONS[o] if 0 <= o < len(ML1M_OCCUPATIONS) else "other" for o in occ],
        "zip_prefix": _zip_prefix(users["zip"]),
    })
    # titles may contain ':' (and even '::' never appears in them), so split each line at most twice
    rows = []
    with open(root / "movies.dat", encoding="latin-1") as f:
        for n, line in enumerate(f):
            parts = line.rstrip("\n").split("::")
            if len(parts) != 3:
                raise RecsysHyperError(f"{root / 'movies.dat'}: line {n + 1} has {len(parts)} '::'-separated "
                                       f"fields, expected 3 (MovieID::Title::Genres): {line.strip()!r}")
            rows.append(parts)
    movies = pd.DataFrame(rows, columns=[S.ITEM_ID, "title", "genres"])
    items = _movie_items(movies)
    return _interaction_frame(ratings), users, items


def _movie_items(movies: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        S.ITEM_ID: movies[S.ITEM_ID].astype("int64"),
        "title": movies["title"].astype(str),
        "genres": [_genres_list(str(g).split("|")) for g in movies["genres"]],
        "year": _year_from_title(movies["title"].astype(str)),
    })


def _read_latest(root: Path) -> tuple[pd.DataFrame, None, pd.DataFrame]:
    ratings = _read_table(root / "ratings.csv", "ratings (ratings.csv)")
    ratings = ratings.rename(columns={"userId": S.USER_ID, "movieId": S.ITEM_ID})
    movies = _read_table(root / "movies.csv", "movies (movies.csv)").rename(columns={"movieId": S.ITEM_ID})
    return _interaction_frame(ratings), None, _movie_items(movies)
