"""`vitlens experiment list|run|show|status|cancel`: a declared grid of training runs (`vitlens.experiments`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments import experiment, parse, preset_names, save_table
from ..experiments.declaration import load
from ..experiments.estimate import estimate
from ..errors import VitlensError
from ..figures import FORMATS, save as save_figure
from .args import check_out, print_table, write_or_say


def add_experiment_command(sub) -> None:
    p = sub.add_parser("experiment", help="declare a grid of training runs once: train, analyse every kept "
                       "checkpoint, resume after any kill, one table across runs")
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    q = actions.add_parser("list", help="the shipped presets, with what each reproduces")
    q.set_defaults(func=cmd_list)
    for name, about in (("run", "train and analyse every cell that is not done (returns when all are)"),
                        ("show", "the table across runs (one row per cell x kept epoch)"),
                        ("status", "each cell's state"), ("cancel", "cancel the experiment's queued and running cells")):
        q = actions.add_parser(name, help=about, description=about)
        q.add_argument("source", metavar="FILE|PRESET", help="a YAML declaration or a preset (`vitlens experiment list`)")
        q.set_defaults(func=globals()[f"cmd_{name}"])
        if name == "run":
            q.add_argument("--dry-run", action="store_true", help="print the cells and jobs, run nothing")
            q.add_argument("--detach", action="store_true", help="queue the cells and return (workers run them)")
            q.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)
        if name == "show":
            q.add_argument("--out", default=None, help="write the table (.csv, .parquet or .json)")
            q.add_argument("--figure", default=None, help="write the main figure across runs (.html, .png, .svg, .pdf)")
            q.add_argument("--figures", default=None, metavar="DIR", help="write every figure across runs (HTML)")
            q.add_argument("--claims", action="store_true", help="judge the paper's claims about training runs")


def cmd_list(args) -> int:
    rows = []
    for name in preset_names():
        data = load(name)
        rows.append(dict(name=name, reproduces=data.get("reproduces") or "", description=data.get("description") or ""))
    print_table(rows, ["name", "reproduces", "description"])
    return 0


def cmd_run(args) -> int:
    if args.dry_run:
        declared = parse(args.source)
        rows = [dict(cell=k + 1, model=c.model, args=c.model_args or "", fraction=c.fraction, recipe=c.recipe.name,
                     seed=c.seed, notes="; ".join(c.notes)) for k, c in enumerate(declared.cells)]
        print_table(rows, ["cell", "model", "args", "fraction", "recipe", "seed", "notes"])
        print(f"{declared.name}: {len(declared.cells)} cells, {declared.epochs} epochs ({declared.budget} budget), "
              f"checkpoints {list(declared.keep)}, analyses {', '.join(declared.analyses) or 'none'}: "
              f"{declared.jobs} computations ({len(declared.cells)} trainings + "
              f"{declared.jobs - len(declared.cells)} (checkpoint, analysis) pairs)")
        print(estimate(declared).describe())
        return 0
    experiment(args.source).run(detach=args.detach, workers=args.workers)
    return 0


def cmd_show(args) -> int:
    sweep = experiment(args.source)
    if args.out:
        check_out(args.out)
    if args.figure:
        check_out(args.figure, FORMATS, "--figure")
    if args.figures:
        check_out(args.figures, what="--figures", folder=True)
    table = sweep.table()
    if args.out:
        write_or_say(lambda: save_table(table, args.out), args.out, cached=True)
    elif not (args.figure or args.figures or args.claims):
        print(table.to_string(index=False, max_colwidth=30))
    drawn = sweep.figures(table) if (args.figure or args.figures) else []
    if (args.figure or args.figures) and not drawn:
        raise VitlensError("the table has nothing to draw yet (no kept epoch with its analyses)")
    if args.figure:
        write_or_say(lambda: save_figure(drawn[0][1], args.figure), args.figure, "--figure")
    if args.figures:
        Path(args.figures).mkdir(exist_ok=True)
        for k, (name, fig) in enumerate(drawn, start=1):
            save_figure(fig, Path(args.figures) / f"{k:02d}_{name}.html")
        print(f"{len(drawn)} figures in {args.figures}")
    if args.claims:
        rows = sweep.claims(table).to_dict("records")
        print_table(rows, ["claim", "model", "verdict", "values", "reason"])
    return 0


def cmd_status(args) -> int:
    states = experiment(args.source).status()
    print_table([dict(cell=s.label, state=s.state, progress=f"{100 * s.fraction:.0f}%", message=s.message[:60])
                 for s in states], ["cell", "state", "progress", "message"])
    return 0


def cmd_cancel(args) -> int:
    print(f"cancelled {experiment(args.source).cancel()} cells")
    return 0
