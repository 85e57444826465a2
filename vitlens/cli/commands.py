"""The `vitlens` subcommands (models, datasets, blocks, train, run, check-device, analyses, cache,
dashboard, worker); `vitlens.cli.exports` has the ones that take views outside (figures, report, reference)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import timm
import torch

from .. import distributed
from ..declarations import get_analysis, list_analyses
from ..store import ResultCache, cache_dir
from ..data import list_datasets
from ..device import resolve_device
from ..engine import build_model, cached_result, run
from ..errors import VitlensError
from ..figures import figures
from ..jobs.manager import manager, mark_dashboard_process
from ..jobs.queue import resolve_location
from ..models import describe_blocks, list_models, load_model
from ..models.registry import check_model_args
from ..models.released import RELEASED, released_checkpoint
from ..models.sizing import size_model
from ..options import markdown_table
from ..request import JobSpec
from ..result import Result
from ..train import train
from ..worker import serve
from .args import check_out, print_table, spec_from_args, write_or_say
from .exports import check_outputs, write_outputs


def _load(args) -> "object":
    spec = JobSpec(analysis="", model=args.model, model_args=dict(args.model_args), checkpoint=args.checkpoint)
    return build_model(spec)


def cmd_models(args) -> int:
    def weights(e):
        released = released_checkpoint(e.name)
        return "shipped" if e.pretrained else f"released ({released.dataset})" if released else ""
    rows = [dict(name=e.name, family=e.family, input="x".join(map(str, e.input_size)), weights=weights(e),
                 description=e.description) for e in list_models()]
    print_table(rows, ["name", "family", "input", "weights", "description"])
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
    print_table(rows, columns)
    return 0


def cmd_blocks(args) -> int:
    if args.out:
        check_out(args.out)
    model = _load(args)
    rows = describe_blocks(model)
    print_table(rows, ["index", "name", "kind", "stage", "output_shape", "params", "skippable", "guessed"])
    if args.out:
        write_or_say(lambda: Result(pd.DataFrame(rows), {"model": args.model}).save(args.out), args.out,
                     cached=False)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_train(args) -> int:
    check_out(args.out, folder=True)  # before any epoch is trained
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


def cmd_run(args) -> int:
    with distributed.session(resolve_device(args.device)):  # no-op unless started by torchrun
        return _run_command(args)


def _run_command(args) -> int:
    spec = spec_from_args(args)
    if args.out:
        check_out(args.out)  # an hour of compute is never lost to a typo
    check_outputs(args)  # a typo in a figure path fails now, not after the computation
    start = time.perf_counter()
    result, cached = run(spec, use_cache=not args.no_cache, verbose=distributed.is_main(),
                         allow_nonfinite=args.allow_nonfinite)
    took = time.perf_counter() - start
    if not distributed.is_main():
        return 0  # rank 0 reports and writes
    summary = result.meta.get("summary")
    if summary:
        print(json.dumps(summary, indent=None, default=str))
    print(f"{args.analysis}: {len(result.frame)} rows, {'from cache' if cached else 'computed'} in {took:.2f}s",
          file=sys.stderr)
    if args.out:
        write_or_say(lambda: result.save(args.out), args.out, cached=not args.no_cache)
        print(f"wrote {args.out}", file=sys.stderr)
    write_outputs(result, args)
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
            print_table(rows, ["option", "default", "values", "help"])
        return 0
    rows = [dict(name=a.name, options=len(a.options), description=a.description) for a in list_analyses()]
    print_table(rows, ["name", "options", "description"])
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
                print_table(rows, ["key", "analysis", "model", "data", "size", "created"])
        else:
            print(f"removed {cache.clear()} entries from {cache_dir()}")
    return 0


def cmd_dashboard(args) -> int:
    """`vitlens dashboard [STREAMLIT OPTIONS]`: `streamlit run app.py` with the embedded workers
    started first, so they import torch while the server comes up, and the server's own imports done
    before it answers: the first page does not wait for them (`streamlit run app.py` also works; its
    workers start when the first page opens)."""
    app = Path(args.app).expanduser() if args.app else DEFAULT_APP
    if not app.is_file():
        raise VitlensError(f"no dashboard script at {app}: run from the repository (app.py) or pass --app PATH")
    manager()  # the embedded workers (SQLite queue, VITLENS_EMBEDDED_WORKERS) start now
    mark_dashboard_process()
    from streamlit.web import cli as stcli  # deferred: only the dashboard needs Streamlit's server
    warm_up()
    sys.argv = ["streamlit", "run", str(app), *args.streamlit]
    return stcli.main()


def warm_up() -> None:
    """What the first page would otherwise pay once (0.4 s of its 0.57 s on 2 cores): the pages'
    imports, the default model sized on the meta device, the shipped Results opened, and one decoded
    and drawn as Plotly JSON."""
    from .. import ui  # noqa: F401  the pages' imports (deferred: only the dashboard needs Streamlit)
    spec = JobSpec(analysis="evaluate")
    size_model(spec.model, {})
    result = cached_result(spec)
    for figure in figures(result) if result is not None else []:
        figure.to_json()


DEFAULT_APP = Path(__file__).resolve().parents[2] / "app.py"  # the repository's (the image's /app/app.py)


def cmd_worker(args) -> int:
    """Take jobs from the queue ($VITLENS_QUEUE or the SQLite file under the cache) until SIGTERM."""
    location = resolve_location(args.queue, "--queue") if args.queue else None
    return serve(location, name=args.name, parent_pid=args.parent_pid, once=args.once, exit_now=True,
                 lanes=args.lanes)
