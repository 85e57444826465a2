"""A declared experiment on the job queue: its cells as jobs, their state, one table across runs.

`Sweep(experiment).run()` queues every cell that is not done (an `experiment_cell` request each, so
identical cells join one job and a finished one is served by the cache), lets the queue's workers
train and analyse them (on one machine the embedded workers `JobManager` starts; with Redis, every
`vitlens worker` on every box takes cells), prints one progress line for the whole sweep and returns
when every cell is done. A killed sweep resumes where it stopped (each cell from its last epoch,
each finished (checkpoint, analysis) from the cache). `table()` reads what exists at any time.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..claims.experiments import judge
from ..data import load_data
from ..experiment_plots import figures as experiment_figures
from ..analyses.experiment_cell import cell_name, columns, summary_numbers, sub_spec
from ..declarations import get_analysis
from ..engine import cached_result
from ..errors import VitlensError
from ..jobs import JobManager, Limits
from ..models import read_checkpoint_metadata
from ..store.paths import experiment_root
from ..training.trainer import checkpoint_name
from .declaration import Experiment, parse

CELL_COLUMNS = ["model", "model_args", "fraction", "recipe", "seed", "status"]
HISTORY = ["epoch", "step", "train_loss", "train_nll", "train_accuracy", "test_nll", "test_accuracy", "test_error",
           "ece"]


@dataclass
class CellState:
    label: str
    state: str  # done, running, queued, failed, cancelled, not started
    fraction: float = 0.0
    message: str = ""
    job: str = ""


class Sweep:
    """One experiment on the queue (`vitlens.experiment(FILE_OR_DICT)` in Python)."""

    def __init__(self, source, manager: JobManager | None = None):
        self.experiment: Experiment = source if isinstance(source, Experiment) else parse(source)
        self._manager = manager

    def __repr__(self) -> str:
        e = self.experiment
        return (f"<vitlens experiment {e.name}: {len(e.cells)} cells x {len(e.keep)} checkpoints x "
                f"{len(e.analyses)} analyses>")

    @property
    def cells(self):
        return self.experiment.cells

    def manager(self, workers: int | None = None) -> JobManager:
        if self._manager is None:
            self._manager = JobManager(embedded_workers=workers)
        return self._manager

    # ---- state

    def status(self) -> list[CellState]:
        """Each cell's state: done (cached), else its job's, else not started."""
        states = []
        manager = self.manager(0)
        for cell, spec in zip(self.cells, self.experiment.specs()):
            if cached_result(spec) is not None:
                states.append(CellState(cell.label, "done", 1.0))
                continue
            job = manager.find(spec)
            if job is None:
                states.append(CellState(cell.label, "not started"))
            else:
                states.append(CellState(cell.label, job.state, job.fraction if job.active else 0.0,
                                        job.error or job.message or "", job.id))
        return states

    # ---- run

    def run(self, detach: bool = False, workers: int | None = None, poll: float = 0.5, log=None) -> "Sweep":
        """Queue the cells that are not done and (unless DETACH) wait for all of them, with one progress
        line on stderr (LOG: where it goes; None: stderr when it is a terminal, else a line per change).
        Ctrl-C or SIGTERM cancels the sweep's jobs. Raises VitlensError when a cell failed."""
        specs = [s for s in self.experiment.specs() if cached_result(s) is None]
        write = log or _line_writer()
        if not specs:  # every cell is done: no worker to start
            write(_progress(self.experiment.name, self.status()), final=True)
            return self
        limits = Limits.from_env()
        for spec in specs:  # every cell and each analysis it will run, under the queue's limits, before any is queued
            limits.check(spec)
            for name, options in self.experiment.analyses.items():
                limits.check(sub_spec(spec, name, options, Path(checkpoint_name(0))))
        manager = self.manager(0 if detach else workers)
        session = f"experiment:{self.experiment.name}"
        jobs: dict[str, object] = {}
        waiting = list(specs)
        try:
            while True:
                active = [j for j in (manager.get(i) for i in jobs) if j is not None and j.active]
                while waiting and len(active) < manager.limits.per_session:
                    job = manager.submit(waiting.pop(0), session=session)
                    jobs[job.id] = job
                    active.append(job)
                if detach:
                    left = f"; {len(waiting)} more after these (VITLENS_MAX_JOBS_PER_SESSION)" if waiting else ""
                    write(f"{self.experiment.name}: {len(jobs)} cells queued for the workers{left}", final=True)
                    return self
                states = self.status()
                write(_progress(self.experiment.name, states))
                if not waiting and all(s.state not in ("running", "queued") for s in states):
                    break
                time.sleep(poll)
        except BaseException:
            for job_id in jobs:
                manager.cancel(job_id)
            raise
        finally:
            if not detach:
                manager.close()
                self._manager = None
        states = self.status()
        write(_progress(self.experiment.name, states), final=True)
        failed = [s for s in states if s.state != "done"]
        if failed:
            raise VitlensError(f"{len(failed)} of {len(states)} cells did not finish; first: {failed[0].label}: "
                               f"{failed[0].state} {failed[0].message}".strip())
        return self

    def cancel(self) -> int:
        """Cancel the sweep's queued and running cells; returns how many."""
        manager, count = self.manager(0), 0
        for spec in self.experiment.specs():
            job = manager.find(spec)
            if job is not None and job.active and manager.cancel(job.id):
                count += 1
        return count

    # ---- the table across runs

    def table(self) -> pd.DataFrame:
        """One row per cell x kept epoch: the cell's axes, its status, the training metrics and every
        summary number of the declared analyses (a cell not done shows what exists so far)."""
        frames = []
        for cell, spec in zip(self.cells, self.experiment.specs()):
            axes = dict(model=cell.model, model_args=json.dumps(cell.model_args, sort_keys=True),
                        fraction=cell.fraction, recipe=cell.recipe.name, seed=cell.seed)
            done = cached_result(spec)
            if done is not None:
                frame = done.frame.drop(columns=["fraction"], errors="ignore").assign(**axes, status="done")
            else:
                frame = self._partial(spec).assign(**axes)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True, sort=False)
        first = CELL_COLUMNS + [c for c in HISTORY if c in table]
        return table[first + [c for c in table.columns if c not in first]]

    def figures(self, table: pd.DataFrame | None = None) -> list:
        """(name, Plotly figure) of every figure across runs the table can show (`vitlens.experiment_plots`)."""
        return experiment_figures(self.table() if table is None else table)

    def claims(self, table: pd.DataFrame | None = None) -> pd.DataFrame:
        """The paper's claims about training runs judged from the finished cells of the table
        (`vitlens.claims.experiments`): "cannot tell", with the reason, where runs did not learn or the
        experiment lacks the axis."""
        table = self.table() if table is None else table
        chance = 1.0 / (load_data(self.experiment.dataset, split="test").num_classes or 1)
        done = table[(table["status"] == "done") & table["epoch"].notna()] if "epoch" in table else table.iloc[:0]
        return judge(done, chance)  # only finished cells: a run still training is not compared at another epoch

    def _partial(self, spec) -> pd.DataFrame:
        """What a cell that is not done has so far: kept checkpoints and the analyses cached for them."""
        params = get_analysis("experiment_cell").parse(spec.params)
        folder = experiment_root() / cell_name(spec, params)
        rows, summaries = [], {}
        for epoch in self.experiment.keep:
            path = folder / checkpoint_name(epoch)
            if not path.exists():
                continue
            meta = read_checkpoint_metadata(path)
            row = {k: meta.get(k, math.nan) for k in HISTORY}
            for name, options in self.experiment.analyses.items():
                found = cached_result(sub_spec(spec, name, options, path))
                summaries.setdefault(name, set()).update(summary_numbers(found) if found else ())
                row[name] = summary_numbers(found) if found else {}
            rows.append(row)
        if not rows:
            return pd.DataFrame([{"status": "not started"}])
        names = columns(set(HISTORY), {n: sorted(k) for n, k in summaries.items()})
        for row in rows:
            for name in self.experiment.analyses:
                numbers = row.pop(name)
                for key in summaries.get(name, ()):
                    row[names[(name, key)]] = numbers.get(key, math.nan)
        return pd.DataFrame(rows).assign(status="partial")


def _progress(name: str, states: list[CellState]) -> str:
    done = sum(s.state == "done" for s in states)
    running = [s for s in states if s.state == "running"]
    share = sum(1.0 if s.state == "done" else s.fraction for s in states) / max(len(states), 1)
    now = f" · {running[0].label}: {running[0].message}" if running and running[0].message else ""
    failed = sum(s.state in ("failed", "cancelled") for s in states)
    bad = f", {failed} failed" if failed else ""
    return f"{name}: {done}/{len(states)} cells done, {len(running)} running{bad} · {100 * share:.0f}%{now}"


def _line_writer():
    """One progress line: rewritten in place on a terminal, else printed when it changes (at most every 5 s)."""
    last = {"text": "", "at": 0.0}
    tty = sys.stderr.isatty()

    def write(text: str, final: bool = False) -> None:
        if tty:
            print("\r" + text[:160].ljust(160), end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or (text != last["text"] and time.time() - last["at"] >= 5):
            print(text, file=sys.stderr, flush=True)
            last.update(text=text, at=time.time())
    return write


def experiment(source) -> Sweep:
    """An experiment from a YAML file, a preset name or a dict: `.run()`, `.table()`, `.status()`, `.cancel()`."""
    return Sweep(source)


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the table; the format follows the suffix (.csv, .parquet, .json)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif suffix == ".json":
        path.write_text(frame.to_json(orient="records", indent=2))
    else:
        raise VitlensError(f"--out must end in .csv, .parquet or .json, got '{path.name}'")
    return path
