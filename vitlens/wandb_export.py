"""W&B export: a Result (or a report) as a Weights & Biases run: the Result's table
(`wandb.Table`), its figures (Plotly) and the request as the run's config.

`wandb` is an optional extra (`pip install vitlens[wandb]`); without it, one line says so. It honours
W&B's own settings: `WANDB_MODE=offline` writes the run under `WANDB_DIR` (or ./wandb) for a later
`wandb sync`, which is how the tests run it (no network).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import VitlensError
from .figures import figures
from .result import Result

MISSING = "W&B export needs the wandb package: pip install 'vitlens[wandb]' (or pip install wandb)"


def _wandb():
    try:
        import wandb  # deferred: an optional extra
    except ImportError:
        raise VitlensError(MISSING) from None
    return wandb


def _config(result: Result) -> dict:
    """The request (spec, parsed options) and versions as a JSON-safe config."""
    keys = ("spec", "params", "versions", "convention", "device", "seconds", "key")
    return json.loads(json.dumps({k: result.meta.get(k) for k in keys if k in result.meta}, default=str))


def _log(run, prefix: str, result: Result) -> None:
    wandb = _wandb()
    frame = result.frame.copy()
    for column in frame.columns:  # W&B tables take plain values
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(str)
    data = {f"{prefix}table": wandb.Table(dataframe=frame)}
    for k, fig in enumerate(figures(result, captioned=True)):
        data[f"{prefix}figure_{k}"] = wandb.Plotly(fig)
    summary = result.meta.get("summary") or {}
    data.update({f"{prefix}{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    run.log(data)


def log_result(result: Result, project: str, name: str | None = None) -> str:
    """Log RESULT as one W&B run in PROJECT; returns the run's directory (offline) or URL."""
    wandb = _wandb()
    spec = result.meta.get("spec") or {}
    run = wandb.init(project=project, name=name or f"{result.meta.get('analysis')}-{spec.get('model', '')}",
                     job_type=str(result.meta.get("analysis", "vitlens")), config=_config(result),
                     reinit="create_new")
    try:
        _log(run, "", result)
        where = run.url or run.dir
    finally:
        run.finish()
    return str(where)


def log_report(report, html_path: str | Path | None, project: str, name: str | None = None) -> str:
    """Log a `vitlens.report.Report`: the scoreboard, every model's Results and the HTML report."""
    wandb = _wandb()
    config = {"models": report.models, "findings": _config(report.findings)}
    run = wandb.init(project=project, name=name or f"report-{'-'.join(report.models)}"[:120], job_type="report",
                     config=config, reinit="create_new")
    try:
        _log(run, "findings/", report.findings)
        for model, results in report.results.items():
            for analysis, result in results.items():
                if len(result.frame):
                    _log(run, f"{model}/{analysis}/", result)
        if html_path is not None and os.path.exists(html_path):
            run.log({"report": wandb.Html(Path(html_path).read_text())})
        where = run.url or run.dir
    finally:
        run.finish()
    return str(where)
