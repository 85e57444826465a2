"""The `vitlens` command.

    vitlens models [--timm PATTERN]        registered models (and timm names matching PATTERN)
    vitlens datasets                       data sets and whether they are available offline
    vitlens blocks --model SPEC            the block table (index, name, kind, stage, shape, params)
    vitlens train --model SPEC --dataset SPEC --epochs N --out DIR
    vitlens experiment run|show|status|cancel FILE|PRESET   a declared grid of training runs (list: presets)
    vitlens run ANALYSIS --model SPEC --dataset SPEC [options] --out FILE
    vitlens run ANALYSIS --help            the analysis' options (declared once, `vitlens.options`)
    vitlens analyses [NAME] [--markdown]   the analyses and their options
    vitlens run ANALYSIS ... --figure F    also write its main figure (.html, .png, .svg, .pdf); --figures DIR
    vitlens report --model A --model B --out report.html   one self-contained HTML report
    vitlens reference list|show NAME       the paper's published data (Fig 1b landscapes)
    vitlens cache ls|clear
    vitlens dashboard [--server.port N]    the dashboard (streamlit run app.py), its workers started first
    vitlens worker                         run queued dashboard jobs (SIGTERM: back to the queue, exit)

Exit status: 0 success, 2 bad input (one-line error, no traceback), 1 internal failure.
Set VITLENS_DEBUG=1 to see the traceback of an internal failure.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..version import __version__
from ..declarations import list_analyses
from ..errors import VitlensError
from ..train import TRAIN_OPTIONS
from .args import PARAMS, Parser, add_analysis_options, add_request_args, option_type, spec_from_args
from .commands import (cmd_analyses, cmd_blocks, cmd_cache, cmd_check_device, cmd_dashboard, cmd_datasets,
                       cmd_models, cmd_run, cmd_train, cmd_worker)
from .experiment import add_experiment_command
from .exports import add_export_commands, add_output_args

__all__ = ["build_parser", "main", "spec_from_args"]


def _add_run_args(p: argparse.ArgumentParser) -> None:
    add_request_args(p)  # `vitlens run findings --models A,B` needs no base model: --model has a default
    p.add_argument("--params", type=option_type(PARAMS), default={}, metavar="JSON", help=PARAMS.help)
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="one analysis option (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="compute even if the result is cached")
    p.add_argument("--out", default=None, help="write the Result (.csv, .parquet or .json)")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load a checkpoint or a tensors data set with NaN/Inf values instead of refusing it")
    add_output_args(p)
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vitlens", description="How do vision transformers work? Analyses of "
                                     "Park & Kim (ICLR 2022) for any model.")
    parser.add_argument("--version", action="version", version=f"vitlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--timm", metavar="PATTERN", default=None, help="also list timm models matching PATTERN (e.g. 'vit_*')")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("datasets", help="list data sets")
    p.add_argument("--root", default=None, help="data root (default $VITLENS_DATA_ROOT or ~/.cache/vitlens/data)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("blocks", help="print a model's blocks")
    add_request_args(p, ("model", "model_args", "checkpoint"), required=("model",))
    p.add_argument("--out", default=None, help="also write the table (.csv/.parquet/.json)")
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("train", help="train a model, saving a checkpoint per epoch")
    add_request_args(p, ("model", "model_args", "checkpoint", "dataset"), required=("model",))
    for o in TRAIN_OPTIONS:
        p.add_argument(o.flag, type=option_type(o), default=o.default, required=o.name == "epochs",
                       help=f"{o.help} ({o.describe()})".replace("%", "%%"))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="folder for epoch_NNN.safetensors")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="run an analysis and write its Result (`vitlens run NAME --help`)")
    analyses = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS", parser_class=Parser)
    for analysis in list_analyses():
        q = analyses.add_parser(analysis.name, help=analysis.description, description=analysis.description)
        _add_run_args(q)
        add_analysis_options(q, list(analysis.options))

    p = sub.add_parser("check-device", help="check that the configured device ($VITLENS_DEVICE) is usable")
    p.set_defaults(func=cmd_check_device)

    p = sub.add_parser("analyses", help="list the analyses and their options")
    p.add_argument("name", nargs="?", default=None, help="one analysis: its options")
    p.add_argument("--markdown", action="store_true", help="README's option table of NAME")
    p.set_defaults(func=cmd_analyses)

    add_export_commands(sub)
    add_experiment_command(sub)

    p = sub.add_parser("cache", help="list or clear the result cache")
    p.add_argument("action", choices=["ls", "clear"])
    p.set_defaults(func=cmd_cache)

    about = ("the dashboard: streamlit run app.py with its embedded workers started first; other options go to "
             "Streamlit (--server.port 8501, --server.headless true, ...)")
    p = sub.add_parser("dashboard", help=about, description=about)
    p.add_argument("--app", default=None, help="the dashboard script (default: the repository's app.py)")
    p.set_defaults(func=cmd_dashboard, streamlit=[])

    p = sub.add_parser("worker", help="run the dashboard's queued jobs (one at a time; start one per GPU)")
    p.add_argument("--queue", default=None, help="redis://host:port/db or sqlite://PATH (default: $VITLENS_QUEUE, "
                   "else the SQLite queue under the cache folder)")
    p.add_argument("--name", default=None, help="worker name shown on the Jobs page (default: host-pid)")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # embedded: exit with the dashboard
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--lanes", choices=["all", "interactive"], default="all",
                   help="all: the interactive lane first, then heavy jobs (default); interactive: only the "
                   f"quick views ({', '.join(a.name for a in list_analyses() if a.lane == 'interactive')})")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dashboard"]:  # Streamlit's own options (--server.port ...) pass through
        args, args.streamlit = parser.parse_known_args(argv)
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except VitlensError as err:
        print(f"vitlens: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitlens: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # internal failure: one line unless debugging
        if os.environ.get("VITLENS_DEBUG"):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(f"vitlens: internal error: {type(err).__name__}: {first} (set VITLENS_DEBUG=1 for details)",
              file=sys.stderr)
        return 1
