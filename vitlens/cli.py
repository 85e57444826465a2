"""The `vitlens` command.

    vitlens models [--timm PATTERN]        registered models (and timm names matching PATTERN)
    vitlens datasets                       data sets and whether they are available offline
    vitlens blocks --model SPEC            the block table (index, name, kind, stage, shape, params)
    vitlens train --model SPEC --dataset SPEC --epochs N --out DIR
    vitlens run ANALYSIS --model SPEC --dataset SPEC [options] --out FILE
    vitlens run ANALYSIS --help            the analysis' options (declared once, `vitlens.options`)
    vitlens analyses [NAME] [--markdown]   the analyses and their options
    vitlens cache ls|clear
    vitlens worker                         run queued dashboard jobs (SIGTERM: back to the queue, exit)

Exit status: 0 success, 2 bad input (one-line error, no traceback), 1 internal failure.
Set VITLENS_DEBUG=1 to see the traceback of an internal failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import timm
import torch

from . import distributed
from .analyses import get_analysis, list_analyses
from .cache import ResultCache, cache_dir
from .data import list_datasets
from .device import resolve_device
from .engine import build_model, run
from .errors import VitlensError
from .models import describe_blocks, list_models, load_model
from .models.checkpoints import RELEASED, released_checkpoint
from .models.registry import check_model_args
from .options import Option, markdown_table
from .request import REQUEST_OPTIONS, JobSpec
from .result import Result
from .train import TRAIN_OPTIONS, train
from .worker import serve


def _json_arg(text: str | None, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise VitlensError(f"{what} is not valid JSON ({err.msg} at column {err.colno}): {text[:80]}") from None
    except RecursionError:
        raise VitlensError(f"{what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise VitlensError(f"{what} must be a JSON object like '{{\"num_classes\": 10}}'")
    return value


def _option_args(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VitlensError(f"--option takes KEY=VALUE, got '{pair}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def _add_request_args(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      required: tuple[str, ...] = ()) -> None:
    """The request's fields as flags, from their one declaration (`vitlens.request.REQUEST_OPTIONS`):
    parsed and bounded exactly as the dashboard and its links parse them."""
    for o in REQUEST_OPTIONS:
        if names is not None and o.name not in names:
            continue
        p.add_argument(o.flag, type=_typed(o), default=None if o.name in required else o.default,
                       required=o.name in required, metavar=o.type.__name__.upper() if not o.choices else None,
                       choices=o.choices or None, help=f"{o.help} ({o.describe()})".replace("%", "%%"))


def _load(args) -> "object":
    spec = JobSpec(analysis="", model=args.model, model_args=dict(args.model_args), checkpoint=args.checkpoint)
    return build_model(spec)


# ----------------------------------------------------------------------------- commands

def cmd_models(args) -> int:
    def weights(e):
        released = released_checkpoint(e.name)
        return "shipped" if e.pretrained else f"released ({released.dataset})" if released else ""
    rows = [dict(name=e.name, family=e.family, input="x".join(map(str, e.input_size)), weights=weights(e),
                 description=e.description) for e in list_models()]
    _print_table(rows, ["name", "family", "input", "weights", "description"])
    print("\nreleased: the authors' CIFAR-100 checkpoints (Park & Kim 2022) load into these models. vitlens does "
          "not download them: fetch one with curl -LO URL (needs a network), then")
    for r in RELEASED:
        print(f"  {r.url}\n      --model {r.model} --model-args '{{\"num_classes\": {r.num_classes}}}' "
              f"--checkpoint {r.file} --dataset {r.dataset}")
    print("\nany timm model: timm:NAME (e.g. timm:vit_tiny_patch16_224 with --model-args '{\"num_classes\": 10}')")
    if args.timm:
        names = timm.list_models(args.timm)
        print(f"\ntimm models matching '{args.timm}' ({len(names)}):")
        for name in names:
            print(f"  timm:{name}")
    return 0


def cmd_datasets(args) -> int:
    rows = list_datasets(args.root)
    columns = [c for c in ("name", "num_classes", "train", "test", "offline", "description") if any(c in r for r in rows)]
    _print_table(rows, columns)
    return 0


def cmd_blocks(args) -> int:
    model = _load(args)
    rows = describe_blocks(model)
    _print_table(rows, ["index", "name", "kind", "stage", "output_shape", "params", "skippable", "guessed"])
    if args.out:
        Result(pd.DataFrame(rows), {"model": args.model}).save(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise VitlensError(f"--out must be a folder for the checkpoints; '{args.out}' is a file")
    model = _load(args) if args.checkpoint else _fresh(args)
    train(model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          weight_decay=args.weight_decay, seed=args.seed, subsample=args.subsample, augment=args.augment,
          label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix, out_dir=args.out,
          device=resolve_device(args.device))
    print(f"checkpoints in {args.out}", file=sys.stderr)
    return 0


def _fresh(args):
    """An untrained model for `vitlens train` (seeded, so the run is reproducible)."""
    torch.manual_seed(args.seed)
    return load_model(args.model, **check_model_args(dict(args.model_args)))


def spec_from_args(args):
    """The JobSpec of `vitlens run ...` arguments (the worker's torchrun command parses back to its spec)."""
    params = _json_arg(args.params, "--params")
    params.update(_option_args(args.option))
    params.update({name[len(OPTION_DEST):]: value for name, value in vars(args).items() if name.startswith(OPTION_DEST)})
    get_analysis(args.analysis).parse(params)  # bad options fail here, before any model is built
    fields = {o.name: getattr(args, o.name) for o in REQUEST_OPTIONS}
    return JobSpec(analysis=args.analysis, params=params, **dict(fields, model_args=dict(fields["model_args"])))


def cmd_run(args) -> int:
    with distributed.session(resolve_device(args.device)):  # no-op unless started by torchrun
        return _run_command(args)


def _run_command(args) -> int:
    spec = spec_from_args(args)
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".parquet", ".json"):
        raise VitlensError(f"--out must end in .csv, .parquet or .json, got '{args.out}'")
    start = time.perf_counter()
    result, cached = run(spec, use_cache=not args.no_cache, verbose=distributed.is_main())
    took = time.perf_counter() - start
    if not distributed.is_main():
        return 0  # rank 0 reports and writes
    summary = result.meta.get("summary")
    if summary:
        print(json.dumps(summary, indent=None, default=str))
    print(f"{args.analysis}: {len(result.frame)} rows, {'from cache' if cached else 'computed'} in {took:.2f}s",
          file=sys.stderr)
    if args.out:
        result.save(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_check_device(args) -> int:
    """Fail fast (one line, exit 2) when the configured device is not usable: the image runs it first."""
    wanted = (os.environ.get("VITLENS_DEVICE") or "auto").strip().lower()
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise VitlensError(f"VITLENS_DEVICE={wanted} but no usable CUDA GPU: torch {torch.__version__} needs an "
                           f"NVIDIA driver for CUDA {torch.version.cuda} (>= 580) and the container toolkit "
                           "(docker run --gpus all); or set VITLENS_DEVICE=cpu")
    device = resolve_device("auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"vitlens: device {device} ({name})", file=sys.stderr)
    return 0


def cmd_analyses(args) -> int:
    if args.name:
        analysis = get_analysis(args.name)
        if args.markdown:
            print(markdown_table(analysis.options))
            return 0
        print(f"{analysis.name}: {analysis.description}")
        if analysis.conventions:
            print(f"conventions: {analysis.conventions}")
        rows = [dict(option=o.flag, default=o.show(o.default), values=o.describe().partition("; ")[2], help=o.help)
                for o in analysis.options]
        if rows:
            _print_table(rows, ["option", "default", "values", "help"])
        return 0
    rows = [dict(name=a.name, options=len(a.options), description=a.description) for a in list_analyses()]
    _print_table(rows, ["name", "options", "description"])
    print("\n`vitlens analyses NAME` or `vitlens run NAME --help` lists an analysis' options")
    return 0


def cmd_cache(args) -> int:
    with ResultCache() as cache:
        if args.action == "ls":
            rows = cache.ls()
            print(f"cache: {cache_dir()} ({len(rows)} entries)")
            if rows:
                for r in rows:
                    r["created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("created") or 0))
                    r["key"] = str(r.get("key", ""))[:12]
                _print_table(rows, ["key", "analysis", "model", "data", "size", "created"])
        else:
            print(f"removed {cache.clear()} entries from {cache_dir()}")
    return 0


def cmd_worker(args) -> int:
    """Take jobs from the queue ($VITLENS_QUEUE or the SQLite file under the cache) until SIGTERM."""
    return serve(args.queue, name=args.name, parent_pid=args.parent_pid, once=args.once, exit_now=True,
                 lanes=args.lanes)


# ----------------------------------------------------------------------------- parser

OPTION_DEST = "option__"  # argparse dest prefix of declared analysis options


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as every other bad input."""

    def error(self, message: str):
        if message.startswith("argument ANALYSIS: invalid choice"):
            message = "unknown analysis " + message.split("invalid choice: ", 1)[1].replace("(choose from", "(available:")
        self.exit(2, f"vitlens: error: {message} (see `{self.prog} --help`)\n")


def _add_analysis_options(p: argparse.ArgumentParser, options: list[Option]) -> None:
    """The analysis' declared options as flags; values stay strings here and are parsed by the
    declaration (one rule for CLI, URL and JSON values)."""
    group = p.add_argument_group("analysis options")
    for o in options:
        extra = dict(nargs="?", const="true") if o.type is bool else {}
        metavar = "|".join(map(str, o.choices)) if o.choices else o.type.__name__.upper()
        group.add_argument(o.flag, dest=OPTION_DEST + o.name, default=argparse.SUPPRESS, metavar=metavar,
                           help=f"{o.help} ({o.describe()})".replace("%", "%%"), **extra)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    _add_request_args(p)  # `vitlens run findings --models A,B` needs no base model: --model has a default
    p.add_argument("--params", default=None, help="analysis options as a JSON object")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="one analysis option (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="compute even if the result is cached")
    p.add_argument("--out", default=None, help="write the Result (.csv, .parquet or .json)")
    p.set_defaults(func=cmd_run)


def _typed(option: Option):
    """An argparse type that parses by OPTION's declaration (one-line errors, exit 2)."""
    def parse(value: str):
        try:
            return option.parse(value)
        except VitlensError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = option.type.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vitlens", description="How do vision transformers work? Analyses of "
                                     "Park & Kim (ICLR 2022) for any model.")
    parser.add_argument("--version", action="version", version=f"vitlens {__import__('vitlens').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--timm", metavar="PATTERN", default=None, help="also list timm models matching PATTERN (e.g. 'vit_*')")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("datasets", help="list data sets")
    p.add_argument("--root", default=None, help="data root (default $VITLENS_DATA_ROOT or ~/.cache/vitlens/data)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("blocks", help="print a model's blocks")
    _add_request_args(p, ("model", "model_args", "checkpoint"), required=("model",))
    p.add_argument("--out", default=None, help="also write the table (.csv/.parquet/.json)")
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("train", help="train a model, saving a checkpoint per epoch")
    _add_request_args(p, ("model", "model_args", "checkpoint", "dataset"), required=("model",))
    for o in TRAIN_OPTIONS:
        p.add_argument(o.flag, type=_typed(o), default=o.default, required=o.name == "epochs",
                       help=f"{o.help} ({o.describe()})".replace("%", "%%"))
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="folder for epoch_NNN.safetensors")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="run an analysis and write its Result (`vitlens run NAME --help`)")
    analyses = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS", parser_class=Parser)
    for analysis in list_analyses():
        q = analyses.add_parser(analysis.name, help=analysis.description, description=analysis.description)
        _add_run_args(q)
        _add_analysis_options(q, list(analysis.options))

    p = sub.add_parser("check-device", help="check that the configured device ($VITLENS_DEVICE) is usable")
    p.set_defaults(func=cmd_check_device)

    p = sub.add_parser("analyses", help="list the analyses and their options")
    p.add_argument("name", nargs="?", default=None, help="one analysis: its options")
    p.add_argument("--markdown", action="store_true", help="README's option table of NAME")
    p.set_defaults(func=cmd_analyses)

    p = sub.add_parser("cache", help="list or clear the result cache")
    p.add_argument("action", choices=["ls", "clear"])
    p.set_defaults(func=cmd_cache)

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


if __name__ == "__main__":
    sys.exit(main())
