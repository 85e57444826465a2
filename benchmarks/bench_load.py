"""Load on a real dashboard (tests/load_scenario.py), with and without the interactive worker.

One session floods six landscape jobs (four accepted: VITLENS_MAX_JOBS_PER_SESSION) while eight
browser sessions open quick views by deep link. Prints a markdown table of the medians over
--reps runs: the quick views' time to chart (median and max over the eight), its phases, jobs lost
and errors shown. The anchor is the same scenario with VITLENS_INTERACTIVE_WORKERS=0 (quick views
then wait for the one general worker, busy with the flood).

    python benchmarks/bench_load.py --reps 3
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from load_scenario import run_scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--interactive", type=int, nargs="+", default=[1, 0],
                        help="VITLENS_INTERACTIVE_WORKERS values to compare")
    args = parser.parse_args()
    print("| interactive workers | time to chart, median / max (s) | page to submit / queue wait / compute / "
          "job done to chart (s) | jobs lost | errors shown | flood accepted / refused |")
    print("|---|---|---|---|---|---|")
    for n in args.interactive:
        runs = [run_scenario(Path(tempfile.mkdtemp()), VITLENS_INTERACTIVE_WORKERS=str(n)) for _ in range(args.reps)]
        med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
        phase = lambda key: statistics.median(r["phases"][key] for r in runs)  # noqa: E731
        print(f"| {n} | {med('median_s'):.1f} / {med('max_s'):.1f} | {phase('submit'):.1f} / {phase('wait'):.1f} / "
              f"{phase('compute'):.1f} / {phase('draw'):.1f} | {sum(r['jobs_lost'] for r in runs)} | "
              f"{sum(r['errors_shown'] for r in runs)} | {med('heavy_accepted'):.0f} / {med('heavy_refused'):.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
