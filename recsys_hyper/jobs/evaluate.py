"""The cold-start evaluation as a job: run the protocol, write the outputs, log them to MLflow,
and render the analysis notebook on the run."""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

from .. import tracking
from ..atomic import atomic_directory
from ..data.dataset import Dataset
from ..errors import RecsysHyperError
from ..evaluation.protocol import TEST, Protocol
from ..evaluation.report import coverage_table, k_curve_figure, markdown_table, reliability_figure, summary
from ..evaluation.runner import DEFAULT_METHODS, EvalResult, evaluate
from ..evaluation.views import hypernetwork_views

log = logging.getLogger(__name__)

#: files of an evaluation's output folder that are logged to its run
LOGGED_FILES = ("results.md", "results.json", "split.parquet", "per_user.parquet", "heads.parquet",
                "example_user.parquet", "coverage.parquet", "reliability.png")
NOTEBOOK = "cold_start_analysis.ipynb"


def write_outputs(result: EvalResult, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """results.md, results.json, split.parquet, per_user.parquet, k_curve.png, coverage.parquet and
    reliability.png (when a method gives prediction intervals) and ``extra`` tables (name ->
    frame), atomically."""
    with atomic_directory(out, overwrite=True) as tmp:
        for name, frame in (extra or {}).items():
            frame.to_parquet(tmp / name, index=False)
        (tmp / "results.md").write_text("\n\n".join(filter(None, (markdown_table(result),
                                                                 coverage_table(result)))) + "\n")
        if not result.coverage.empty:
            result.coverage.to_parquet(tmp / "coverage.parquet", index=False)
            reliability_figure(result.coverage).savefig(tmp / "reliability.png", dpi=110)
        (tmp / "results.json").write_text(json.dumps(summary(result), indent=2, default=float, allow_nan=False))
        result.split.table.to_parquet(tmp / "split.parquet", index=False)
        result.per_user.to_parquet(tmp / "per_user.parquet", index=False)
        k_curve_figure(result).savefig(tmp / "k_curve.png", dpi=110)
    return Path(out)


def log_result(result: EvalResult, out: str | os.PathLike, ds: Dataset,
               experiment: str = tracking.EVALUATION_EXPERIMENT, tags: dict | None = None,
               nested: bool = False) -> str:
    """The evaluation's MLflow parent run with a child run per (method, k), its input dataset,
    data digest and code version; returns its id."""
    from ..data.dataset import content_digest
    from .models import code_version

    data_source = str(ds.source)
    p = result.protocol
    params = {
        "data": data_source, "seed": p.seed, "shots": ",".join(map(str, p.shots)),
        "methods": ",".join(result.table["method"].unique()), "val_fraction": p.val_fraction,
        "test_fraction": p.test_fraction, "min_query": p.min_query, "relevance_threshold": p.relevance_threshold,
        "split_digest": result.split.digest, "test_users": result.n_test_users,
        "evaluated_users": result.n_eligible,
    }
    return tracking.log_evaluation(result.table, params, k_curve_figure(result), [Path(out) / f for f in LOGGED_FILES],
                                   data_dir=data_source, seconds=result.seconds, experiment=experiment,
                                   tags={"code_version": code_version(), **(tags or {})}, nested=nested, dataset=ds,
                                   data_digest=content_digest(ds.interactions))


def run_cold_start_evaluation(ds: Dataset, out: str | os.PathLike, protocol: Protocol = Protocol(),
                              methods=DEFAULT_METHODS, model_config=None, track: bool = True,
                              experiment: str | None = None, progress: bool = True,
                              tags: dict | None = None, nested: bool = False, split=None,
                              fitted: dict | None = None) -> tuple[EvalResult, str | None]:
    """Evaluate, write the outputs to ``out``, and (``track``) log the MLflow run layout.
    Returns the result and the MLflow parent run id. ``split`` / ``fitted``: see
    :func:`~recsys_hyper.evaluation.runner.evaluate`."""
    result = evaluate(ds, protocol, methods=methods, model_config=model_config, progress=progress, split=split,
                      fitted=fitted)
    write_outputs(result, out, extra=hypernetwork_views(result, ds))
    run_id = None
    if track:
        run_id = log_result(result, out, ds, experiment or tracking.EVALUATION_EXPERIMENT, tags, nested)
    return result, run_id


def run_onboarding_evaluation(ds: Dataset, split, model, track: bool = True, experiment: str | None = None,
                              parent_run_id: str | None = None, users: str = TEST, progress: bool = True,
                              ask_kw: dict | None = None, strategies=None, faithfulness_events: int = 20):
    """The elicitation protocol (:mod:`recsys_hyper.evaluation.onboarding`) for a hypernetwork
    fitted on ``split``'s training users, on its ``users`` (test users; validation users to choose
    settings), and the explanations' faithfulness on the same users' first
    ``faithfulness_events`` events; logged to MLflow (nested under ``parent_run_id``) when
    ``track``. Returns the :class:`OnboardingResult`, the faithfulness figures and the run id."""
    from ..data import schema as S
    from ..data.episodes import Histories, capped_sample
    from ..evaluation.explanations import faithfulness
    from ..evaluation.onboarding import STRATEGIES, run_onboarding
    from ..evaluation.protocol import TRAIN

    events = ds.interactions
    train_h, _ = Histories.from_interactions(events[events[S.USER_ID].isin(split.users(TRAIN))], model.item_map_)
    cold_h, _ = Histories.from_interactions(events[events[S.USER_ID].isin(split.users(users))], model.item_map_)
    result = run_onboarding(model, train_h, cold_h, ds.users, strategies=strategies or STRATEGIES,
                            progress=progress, ask_kw=ask_kw)
    cold_h = cold_h.select(capped_sample(len(cold_h), result.params["max_users"], [0, 4099]))   # the protocol's users
    faith = faithfulness(model, cold_h.mask(cold_h.positions_in_user() < faithfulness_events), ds.users)
    run_id = None
    if track:
        metrics = {f"reference_{k}": v for k, v in result.reference.items() if k != "questions"}
        metrics.update({f"faithfulness_{k}": v for k, v in faith.items()})
        for row in result.to_reach.to_dict(orient="records"):
            metrics.update({f"{row['strategy']}/{k}": v for k, v in row.items() if k != "strategy"})
        run_id = tracking.log_onboarding(result.curve, result.to_reach, {**result.params, "data": str(ds.source),
                                         "cold_users": users, "split_digest": split.digest}, metrics,
                                         result.figure(), experiment or tracking.EVALUATION_EXPERIMENT,
                                         parent_run_id=parent_run_id)
    return result, faith, run_id


#: what executing and rendering the notebook imports (the ``notebook`` extra)
NOTEBOOK_MODULES = ("papermill", "nbformat", "nbconvert", "ipykernel", "sklearn", "matplotlib")


def require_notebook_extra() -> None:
    """Refuse ``--notebook`` at once, naming the extra, when what it needs is not installed."""
    from importlib.util import find_spec

    missing = [m for m in NOTEBOOK_MODULES if find_spec(m) is None]
    if missing:
        raise RecsysHyperError(f"--notebook needs the notebook extra ({', '.join(missing)} not installed): "
                               f"pip install 'recsys-hyper[notebook]', or drop --notebook")


def render_notebook(run_id: str, out: str | os.PathLike, tracking_uri: str | None = None, code: bool = False) -> Path:
    """Execute the cold-start analysis notebook (package data) against ``run_id`` with papermill,
    render it to HTML (nbconvert) in ``out`` and log the HTML to the run. The HTML is a report:
    figures, tables and text, without the code (``code``: with it) and without what cells wrote
    to stderr (libraries' warnings); the executed notebook beside it keeps everything."""
    require_notebook_extra()
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    source = resources.files("recsys_hyper.notebooks") / NOTEBOOK
    if not source.is_file():
        raise RecsysHyperError(f"{NOTEBOOK}: the analysis notebook is missing from the installed package "
                               f"(recsys_hyper/notebooks); reinstall recsys-hyper")
    uri = tracking.configure(tracking_uri)
    out = Path(out)
    executed = out / NOTEBOOK
    with resources.as_file(source) as notebook:
        papermill.execute_notebook(str(notebook), str(executed), parameters={"tracking_uri": uri, "run_id": run_id},
                                   progress_bar=False, cwd=str(out))
    node = nbformat.read(executed, as_version=4)
    for cell in node.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", [])
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    html, _ = HTMLExporter(exclude_input=not code, exclude_input_prompt=not code,
                           exclude_output_prompt=not code).from_notebook_node(node)
    target = out / "cold_start_analysis.html"
    target.write_text(html)
    tracking.log_artifact_to_run(run_id, target)
    return target


def evaluate_command(data: str | os.PathLike, out: str | os.PathLike, methods, shots, seed: int = 0,
                     model_config=None, track: bool = True, experiment: str | None = None, notebook: bool = False,
                     notebook_code: bool = False,
                     progress: bool = True, onboarding: bool = False, overwrite: bool = False) -> str:
    """``recsys-hyper evaluate``: the results table, where the notebook went, and a summary line.
    ``onboarding``: also the elicitation protocol and the explanations' faithfulness on the
    fitted hypernetwork (a run nested in the evaluation's). ``out`` is replaced at the end: an
    earlier evaluation's folder, or (``overwrite``) any folder, never one that holds the data."""
    from ..data import load_dataset
    from .paths import check_dir_out

    check_dir_out(out, [data], overwrite=overwrite, marker="results.json", what="an evaluation's output folder",
                  replaces="the evaluation would replace it")
    ds = load_dataset(data)
    try:
        protocol = Protocol(shots=tuple(sorted(set(shots))), seed=seed)
    except ValueError as exc:
        raise RecsysHyperError(str(exc)) from None
    if notebook and not track:
        raise RecsysHyperError("--notebook reads the MLflow run: drop --no-track")
    if notebook:
        require_notebook_extra()                     # before minutes of evaluation, not after
    if onboarding and "hyper" not in methods:
        raise RecsysHyperError("--onboarding measures the hypernetwork: add 'hyper' to --methods")
    if track:
        tracking.ensure_reachable()                  # fail in seconds, before any work
    result, run_id = run_cold_start_evaluation(ds, out, protocol, methods=tuple(dict.fromkeys(methods)),
                                               model_config=model_config, track=track, experiment=experiment,
                                               progress=progress)
    lines = [markdown_table(result)]
    if not result.coverage.empty:
        lines += ["", coverage_table(result)]
    if onboarding:
        onb, faith, _ = run_onboarding_evaluation(ds, result.split, result.fitted["hyper"], track=track,
                                                  experiment=experiment, parent_run_id=run_id, progress=progress)
        lines += ["", f"Onboarding ({onb.users} cold users; reference: chronological after "
                      f"{onb.reference['questions']} events):", "", onb.markdown("ndcg@10"), "",
                  onb.markdown("answered", digits=2), "",
                  f"explanations: removing the most-blamed event lowers the score by {faith['drop_top']:.3f} on "
                  f"average, a random event by {faith['drop_random']:.3f} ({faith['pairs']:,} recommendations)"]
    if notebook:
        lines.append(f"analysis notebook -> {render_notebook(run_id, out, code=notebook_code)}")
    lines.append(f"\n{result.n_eligible} of {result.n_test_users} test users evaluated (>= "
                 f"{max(protocol.shots) + protocol.min_query} interactions); split {result.split.digest[:12]}; "
                 f"{result.seconds:.0f}s -> {out}" + (f"; MLflow run {run_id}" if run_id else ""))
    return "\n".join(lines)
