"""The command's arguments, from the declarations: the request's fields (`vitlens.request`), each
analysis' options (`vitlens.analyses`), parsed by the same `Option`s as the dashboard and links."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..declarations import get_analysis
from ..errors import VitlensError
from ..options import Option
from ..request import REQUEST_OPTIONS, JobSpec

OPTION_DEST = "option__"  # argparse dest prefix of declared analysis options
PARAMS = Option("params", dict, {}, "analysis options as a JSON object")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as every other bad input."""

    def error(self, message: str):
        if message.startswith("argument ANALYSIS: invalid choice"):
            message = "unknown analysis " + message.split("invalid choice: ", 1)[1].replace("(choose from", "(available:")
        self.exit(2, f"vitlens: error: {message} (see `{self.prog} --help`)\n")


def add_analysis_options(p: argparse.ArgumentParser, options: list[Option]) -> None:
    """The analysis' declared options as flags; values stay strings here and are parsed by the
    declaration (one rule for CLI, URL and JSON values)."""
    group = p.add_argument_group("analysis options")
    for o in options:
        extra = dict(nargs="?", const="true") if o.type is bool else {}
        metavar = "|".join(map(str, o.choices)) if o.choices else o.type.__name__.upper()
        group.add_argument(o.flag, dest=OPTION_DEST + o.name, default=argparse.SUPPRESS, metavar=metavar,
                           help=f"{o.help} ({o.describe()})".replace("%", "%%"), **extra)


def option_type(option: Option, empty_ok: bool = True):
    """An argparse type that parses by OPTION's declaration (one-line errors, exit 2). EMPTY_OK
    false: an empty value is refused (`--checkpoint ""` is a slip, not "no checkpoint")."""
    def parse(value: str):
        if not empty_ok and not value.strip():
            raise argparse.ArgumentTypeError(f"{option.flag} needs a value (leave the flag out for none)")
        try:
            return option.parse(value)
        except VitlensError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = option.type.__name__
    return parse


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


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print ROWS as a plain table of COLUMNS (a header line, then one padded line per row)."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def add_request_args(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      required: tuple[str, ...] = ()) -> None:
    """The request's fields as flags, from their one declaration (`vitlens.request.REQUEST_OPTIONS`):
    parsed and bounded exactly as the dashboard and its links parse them."""
    for o in REQUEST_OPTIONS:
        if names is not None and o.name not in names:
            continue
        p.add_argument(o.flag, type=option_type(o, empty_ok=not o.path), default=None if o.name in required else o.default,
                       required=o.name in required, metavar=o.type.__name__.upper() if not o.choices else None,
                       choices=o.choices or None, help=f"{o.help} ({o.describe()})".replace("%", "%%"))


def spec_from_args(args):
    """The JobSpec of `vitlens run ...` arguments (the worker's torchrun command parses back to its spec)."""
    params = dict(args.params)
    params.update(_option_args(args.option))
    params.update({name[len(OPTION_DEST):]: value for name, value in vars(args).items() if name.startswith(OPTION_DEST)})
    get_analysis(args.analysis).parse(params)  # bad options fail here, before any model is built
    fields = {o.name: getattr(args, o.name) for o in REQUEST_OPTIONS}
    return JobSpec(analysis=args.analysis, params=params, **dict(fields, model_args=dict(fields["model_args"])))


RESULT_SUFFIXES = (".csv", ".parquet", ".json")


def check_out(path: str | Path, suffixes: tuple[str, ...] = RESULT_SUFFIXES, what: str = "--out",
              folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before anything is computed: an unknown suffix,
    a directory where a file goes (or a file where a folder goes), a missing or read-only parent, a
    name too long for the file system."""
    path = Path(path)
    if not folder and path.suffix.lower() not in suffixes:
        raise VitlensError(f"{what} must end in {', '.join(suffixes)}, got '{path.name[:80]}'")
    if len(path.name.encode()) > 255 or len(str(path).encode()) > 4095:
        raise VitlensError(f"{what}: the name is too long for a file system ({len(path.name.encode())} bytes)")
    if not folder and path.is_dir():
        raise VitlensError(f"{what} {path} is a folder; name a file")
    if folder and path.exists() and not path.is_dir():
        raise VitlensError(f"{what} must be a folder; '{path}' is a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise VitlensError(f"{what}: the folder {parent} does not exist")
    target = path if folder and path.is_dir() else parent
    if not os.access(target, os.W_OK):
        raise VitlensError(f"{what}: {target} is not writable")
    return path


def write_or_say(write, path: str | Path, what: str = "--out", cached: bool = True) -> None:
    """Call WRITE(); a write error after a computation is one line that says where the Result still is."""
    try:
        write()
    except OSError as err:
        where = ("; the Result is in the cache: the same command with another --out gets it at once"
                 if cached else "")
        raise VitlensError(f"could not write {what} {path}: {err.strerror or err}{where}") from None
