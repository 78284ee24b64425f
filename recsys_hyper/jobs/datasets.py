"""Dataset jobs: validate, describe, generate and import dataset directories."""

from __future__ import annotations

import json
import os
import time

from ..data import load_dataset, write_dataset


def validate(path: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False) -> dict:
    """Validate a dataset directory (raises with every problem); ``out``: also write the
    normalised dataset there. Returns a summary."""
    from .paths import check_dir_out

    if out:
        check_dir_out(out, [path], overwrite=overwrite)
    ds = load_dataset(path)
    if out:
        write_dataset(ds, out, overwrite=overwrite)
    r = ds.report
    return {"valid": True, "dir": str(path), "interactions": ds.n_interactions, "users": len(ds.user_ids()),
            "items": len(ds.item_ids()), "feedback": "implicit" if ds.implicit else "explicit",
            "duplicates_dropped": r.n_duplicates_dropped, "notes": r.notes}


def validation_summary(s: dict, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(s, indent=2)
    return (f"{s['dir']}: valid ({s['interactions']:,} interactions, {s['users']:,} users, {s['items']:,} items, "
            f"{s['feedback']} feedback"
            + (f"; {s['duplicates_dropped']:,} duplicate events will be dropped, latest kept"
               if s["duplicates_dropped"] else "") + ")")


def describe(path: str | os.PathLike, as_json: bool = False) -> str:
    from ..data.describe import describe as summarise, format_description

    d = summarise(load_dataset(path))
    return json.dumps(d, indent=2) if as_json else format_description(d)


def synth(out: str | os.PathLike, preset_name: str = "default", users: int | None = None, items: int | None = None,
          seed: int = 0, implicit: bool = False, overwrite: bool = False, progress: bool = True) -> str:
    from ..data.synthetic import generate, preset

    cfg = preset(preset_name, n_users=users, n_items=items, seed=seed, implicit=True if implicit else None)
    t0 = time.perf_counter()
    generate(cfg, out, overwrite=overwrite, progress=progress)
    return (f"wrote {cfg.n_users:,} users x {cfg.n_items:,} items to {out} in {time.perf_counter() - t0:.1f}s "
            f"(seed {cfg.seed}, {'implicit' if cfg.implicit else 'explicit'} feedback)")


def import_movielens(src: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
                     variant: str | None = None) -> str:
    from ..data.movielens import import_movielens as convert
    from .paths import check_dir_out

    check_dir_out(out, [src], overwrite=overwrite)
    ds = convert(src, out, overwrite=overwrite, variant=variant)
    return (f"imported {ds.source}: {ds.n_interactions:,} interactions, {len(ds.user_ids()):,} users, "
            f"{len(ds.item_ids()):,} items -> {out}")
