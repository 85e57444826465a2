"""The commands that take views outside the server: a Result's figures (`vitlens run ... --figure`),
the HTML report (`vitlens report`), W&B export (`--wandb PROJECT`) and the paper's own data
(`vitlens reference`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..declarations import get_analysis
from ..errors import VitlensError
from ..figures import FORMATS, declared, figures, save
from ..store.reference import list_references, reference
from ..request import parse_request
from ..result import Result
from .args import OPTION_DEST, add_analysis_options, add_request_args, check_out, print_table, write_or_say

FIGURE_FORMATS = tuple(f[1:] for f in FORMATS)


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--figure", default=None, metavar="PATH",
                   help=f"also write the main figure ({', '.join(FORMATS)}; .html opens offline, the others need "
                        "a Chromium for kaleido)")
    p.add_argument("--figures", default=None, metavar="DIR", help="also write every figure, numbered, into DIR")
    p.add_argument("--figure-format", default="html", choices=FIGURE_FORMATS, help="the format of --figures")
    p.add_argument("--wandb", default=None, metavar="PROJECT",
                   help="also log the Result to W&B (table, figures, request as config; honours WANDB_MODE=offline)")


def check_outputs(args) -> None:
    """Refuse a figure path that cannot be written before anything is computed."""
    if args.figure:
        check_out(args.figure, FORMATS, "--figure")
    if args.figures:
        check_out(args.figures, what="--figures", folder=True)


def write_outputs(result: Result, args) -> None:
    """--figure, --figures and --wandb of `vitlens run`."""
    if args.figure:
        drawn = figures(result, captioned=True)
        if not drawn:
            raise VitlensError(f"{result.meta.get('analysis')} declares no figure; the Result is in the cache")
        write_or_say(lambda: save(drawn[0], args.figure), args.figure, "--figure")
        print(f"wrote {args.figure}", file=sys.stderr)
    if args.figures:
        folder = Path(args.figures)
        folder.mkdir(parents=True, exist_ok=True)
        for k, (fig, how) in enumerate(zip(figures(result, captioned=True), declared(result)), start=1):
            path = folder / f"{result.meta['analysis']}_{k:02d}_{how.plot}.{args.figure_format}"
            write_or_say(lambda: save(fig, path), path, "--figures")
            print(f"wrote {path}", file=sys.stderr)
    if args.wandb:
        from ..wandb_export import log_result  # deferred: wandb is an optional extra, imported only here
        print(f"logged to W&B: {log_result(result, args.wandb)}", file=sys.stderr)


# ----------------------------------------------------------------------------- report

def cmd_report(args) -> int:
    from ..report import gather, render  # deferred: a report imports every analysis' plots
    out = check_out(args.out, (".html",))
    fields = {name: getattr(args, name) for name in ("dataset", "split", "samples", "batch_size", "seed", "device")}
    base = parse_request(fields, "findings")
    options = {name[len(OPTION_DEST):]: value for name, value in vars(args).items() if name.startswith(OPTION_DEST)}
    options.pop("models", None)
    models = list(dict.fromkeys(args.model))
    report = gather(base, models, options, verbose=True)
    write_or_say(lambda: out.write_text(render(report)), out)
    print(f"wrote {out} ({len(models)} models, {report.seconds:.1f}s)", file=sys.stderr)
    if args.wandb:
        from ..wandb_export import log_report  # deferred: optional extra
        print(f"logged to W&B: {log_report(report, out, args.wandb)}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- reference

def cmd_reference(args) -> int:
    if args.action == "list":
        rows = [dict(name=r.name, model=r.model, weight_decay=r.weight_decay, description=r.description)
                for r in list_references()]
        print_table(rows, ["name", "model", "weight_decay", "description"])
        return 0
    if not args.name:
        raise VitlensError("vitlens reference show NAME (see `vitlens reference list`)")
    result = reference(args.name)
    print(result.meta["caption"], file=sys.stderr)
    if args.out:
        check_out(args.out)
        write_or_say(lambda: result.save(args.out), args.out, cached=False)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(result.frame[["x", "y", "loss", "nll", "l2", "accuracy"]].to_string(index=False, max_rows=12))
    if args.figure:
        check_out(args.figure, FORMATS, "--figure")
        write_or_say(lambda: save(figures(result, captioned=True)[0], args.figure), args.figure, "--figure", False)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


def add_export_commands(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report: findings, evidence, every figure per model")
    p.add_argument("--model", action="append", required=True, help="a model spec (repeat for several)")
    add_request_args(p, ("dataset", "split", "samples", "batch_size", "seed", "device"))
    add_analysis_options(p, [o for o in get_analysis("findings").options if o.name != "models"])
    p.add_argument("--out", required=True, help="the report (.html)")
    p.add_argument("--wandb", default=None, metavar="PROJECT", help="also log the report to W&B")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reference", help="the paper's published data as reference Results")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?", default=None, help="a reference name (show)")
    p.add_argument("--out", default=None, help="write it (.csv, .parquet or .json)")
    p.add_argument("--figure", default=None, help=f"write its figure ({', '.join(FORMATS)})")
    p.set_defaults(func=cmd_reference)
