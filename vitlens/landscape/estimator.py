"""The loss at one grid point, exactly or in statistical mode (`PointEvaluator`).

Statistical mode. A coarse sub-grid of *anchor* points (``anchors`` per axis, evenly spaced grid
points including both ends, plus the centre when it is a grid point: 5x5 on the paper's 21x21) is
evaluated on every sample first; anchor rows are exact (SE 0). Every other point visits the samples
in one seeded random order, so any prefix is a simple random sample of the whole set, and is
estimated with the regression estimator (Cochran, "Sampling Techniques", 3rd ed., Ch. 7; with
several controls its multiple-regression form): the controls are the per-sample losses of the
anchors at the corners of the point's cell (2 on an anchor line or a 1D path, 4 inside), whose
population means are known exactly. Far from the centre the per-sample NLL is heavy-tailed (a
few samples with losses in the hundreds), but the same samples are heavy at the neighbouring
anchors, so the regression residuals are small and well behaved where a single centre control
(the previous design) correlated poorly. Standard errors include the finite-population
correction, so a point that used every sample is exact (SE 0).

Stopping rule: a point stops once ``z * SE <= max(tolerance, rtol * |loss|)`` held at the last two
checks (one per batch) and it has used at least ``min_samples`` samples (and ``min_batches``
batches). Why these guards: the SE from a short prefix is itself a noisy estimate, smallest exactly
when the prefix happens to miss the rare heavy-loss samples; stopping at the first lucky check
then under-covers. In a simulation over 8 sample orders of the demo_resnet 21x21 surface (bound
max(0.05, 0.02 |loss|)), stopping at the first check after 32 samples missed the bound in 1 of
the 8 orders (worst error 2.7x the bound); with 128 samples and two checks in a row it never did.
A floor on the variance from the neighbouring point was tried as well; it barely moved the
coverage (440.5 -> 440.6 of 441 points within z * SE, mean over the 8 orders) for 4% more
samples, so it is not used. ``z`` is per point, and stopping when the SE first looks small makes
the coverage a little below nominal (simulated demo_vit surface: ~4 of its 416 estimated points
outside z * SE at z = 3, where ~1 is nominal). The stated bound is usually looser than z * SE,
since most points stop at the minimum sample count; for a guarantee over a whole 441-point grid
use z ~ 4 (Bonferroni, 5%). benchmarks/README.md gives the measured figures.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from ..device import seconds
from ..errors import VitlensError
from ..progress import checkpoint
from .offsets import L2_KINDS, WeightOffsets, l2_term
from .samples import Samples, per_sample_nll


def _estimate(y: torch.Tensor, controls: torch.Tensor | None, control_means: torch.Tensor | None,
              population: int) -> tuple[float, float]:
    """Mean of Y over the population from a simple random sample (the first n of a random order).

    CONTROLS (n, p): the same samples' values of p variables whose population means CONTROL_MEANS
    are known (here: anchor points' per-sample losses). With them the regression estimator
    ``ybar + b . (Xbar - xbar)``, b the least-squares slopes of y on the controls (Cochran,
    "Sampling Techniques", Ch. 7), and its standard error from the residual variance with n - p - 1
    degrees of freedom; without, the sample mean. Both with the finite-population correction
    (exact, SE 0, once n = population).
    """
    n = len(y)
    if n >= population:
        return float(y.mean()), 0.0
    fpc = 1.0 - n / population
    ym = y.mean()
    dy = y - ym
    if controls is None or controls.shape[1] == 0 or n < controls.shape[1] + 3:
        s2 = float((dy ** 2).sum()) / max(n - 1, 1)
        return float(ym), math.sqrt(s2 / n * fpc)
    xm = controls.mean(dim=0)
    dx = controls - xm
    # least squares on centred values (the intercept is then the means); gelsd copes with controls
    # that are collinear on the prefix (e.g. 0/1 correctness that is 1 everywhere so far)
    fit = torch.linalg.lstsq(dx, dy[:, None], driver="gelsd")
    b, rank = fit.solution[:, 0], int(fit.rank)
    resid = dy - dx @ b
    s2 = float((resid ** 2).sum()) / max(n - rank - 1, 1)
    return float(ym + (control_means - xm) @ b), math.sqrt(s2 / n * fpc)


class PointEvaluator:
    """Loss, NLL, L2 and accuracy at grid points of one model, data set and set of directions.

    Statistical mode (TOLERANCE or RTOL > 0): first `add_anchor` the points whose per-sample values
    serve as controls; `evaluate` then stops early, with the anchors at the corners of the point's
    cell as controls (see the module docstring).
    """

    def __init__(self, model: nn.Module, samples: Samples, directions: Sequence[dict], *,
                 weight_decay: float = 0.0, l2: str = "paper", tolerance: float = 0.0, rtol: float = 0.0,
                 z: float = 3.0, min_batches: int = 2, min_samples: int = 128):
        if l2 not in L2_KINDS:
            raise VitlensError(f"unknown l2 '{l2}'; choose from {', '.join(L2_KINDS)}")
        for name, value in (("weight_decay", weight_decay), ("tolerance", tolerance), ("rtol", rtol)):
            if not math.isfinite(value) or value < 0:
                raise VitlensError(f"{name} must be a finite number >= 0, got {value}")
        if not z > 0:
            raise VitlensError(f"z must be > 0, got {z}")
        self.model, self.samples = model, samples
        self.offsets = WeightOffsets(model, directions)
        self.weight_decay, self.l2_kind = float(weight_decay), l2
        self.tolerance, self.rtol, self.z = float(tolerance), float(rtol), float(z)
        self.min_batches = max(int(min_batches), 1)
        self.min_samples = max(int(min_samples), 1)
        self.population = samples.count
        self.all_params = list(model.parameters())
        # anchors' per-sample (nll, correct), float64 CPU, keyed by coordinates (statistical mode)
        self.anchors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stacking = True  # evaluate_many may stack points (False after a stacked pass failed)
        self.samples_evaluated = 0  # forward-passed samples over all points (cost accounting)
        self.points_evaluated = 0

    @property
    def statistical(self) -> bool:
        return self.tolerance > 0 or self.rtol > 0

    def add_anchor(self, coords: Sequence[float]) -> dict:
        """Evaluate COORDS on every sample (an exact row) and keep its per-sample values as a control."""
        coords = tuple(float(c) for c in coords)
        row, per_sample = self._run(coords, keep=True, stop=False)
        if row["finite"] and per_sample is not None:
            self.anchors[coords] = per_sample
        return row

    @torch.no_grad()
    def evaluate(self, coords: Sequence[float]) -> dict:
        row, _ = self._run(coords, keep=self.statistical, stop=self.statistical)
        return row

    @torch.no_grad()
    def evaluate_many(self, points: Sequence[Sequence[float]]) -> list[dict]:
        """Exact rows for several POINTS, with one batched forward pass per batch for all of them
        (`torch.func.vmap` over the moved parameters stacked per point, `WeightOffsets.stacked`; the
        other parameters and the buffers shared, eval mode as everywhere here). The rows equal
        `evaluate`'s to float rounding (the batched kernels sum in another order). One point, or
        statistical mode (each point stops on its own), is `evaluate` point by point, and so is a
        model with an op that vmap cannot batch."""
        points = [tuple(float(c) for c in coords) for coords in points]
        if self.statistical or len(points) < 2 or not self.stacking:
            return [self.evaluate(c) for c in points]
        try:
            sums = self._stacked_sums(points, self.samples.batches)
        except (RuntimeError, NotImplementedError):  # no batching rule, or out of memory: one at a time
            self.stacking = False  # from now on (each later try would fail the same way)
            return [self.evaluate(c) for c in points]
        rows = []
        for nll_sum, correct_sum, n, finite, l2 in sums:
            self.points_evaluated += 1
            self.samples_evaluated += n
            rows.append(self._row(nll_sum / n, correct_sum / n, l2, n, 0.0, finite))
        return rows

    def _row(self, nll: float, accuracy: float, l2: float, n: int, stderr: float, finite: bool) -> dict:
        """One grid point's row: loss = NLL + weight_decay * L2; not finite if either part is not."""
        loss = nll + self.weight_decay * l2
        finite = bool(finite and math.isfinite(loss))
        return dict(loss=loss, nll=nll, l2=l2, accuracy=accuracy, samples=n,
                    stderr=stderr if finite else math.nan, finite=finite)

    def _stacked_sums(self, points: list[tuple], batches) -> list[tuple]:
        """Per point of POINTS over BATCHES: (NLL sum, correct count, samples, all finite, L2)."""
        self.offsets.restore()  # w0 in the model; the moved parameters come stacked instead
        moved = self.offsets.stacked(points)
        fixed = {n: p for n, p in self.model.named_parameters() if n not in moved}
        l2_fixed = l2_term(fixed.values(), self.l2_kind) if fixed else 0.0
        shared = {**fixed, **dict(self.model.named_buffers())}
        l2 = [l2_fixed + l2_term([w[k] for w in moved.values()], self.l2_kind) for k in range(len(points))]

        def forward(weights, x):
            return functional_call(self.model, (weights, shared), (x,))
        logits_of = vmap(forward, in_dims=(0, None))
        P = len(points)
        device = next(iter(moved.values())).device
        nll_sum = torch.zeros(P, dtype=torch.float64, device=device)
        correct = torch.zeros(P, dtype=torch.float64, device=device)
        finite = torch.ones(P, dtype=torch.bool, device=device)
        n = 0
        for x, target, label in batches:
            checkpoint()  # a worker may stop the job here (each batch of each grid point)
            logits = logits_of(moved, x)  # (P, B, classes)
            nll = per_sample_nll(logits.flatten(0, 1), target.repeat(P, *[1] * (target.dim() - 1)))
            nll = nll.view(P, -1).double()
            finite &= torch.isfinite(nll).all(dim=1)
            nll_sum += nll.sum(dim=1)
            correct += (logits.argmax(dim=2) == label[None]).double().sum(dim=1)
            n += len(x)
        return [(float(a), float(c), n, bool(f) and math.isfinite(w), w)
                for a, c, f, w in zip(nll_sum.tolist(), correct.tolist(), finite.tolist(), l2)]

    def points_per_pass(self, candidates: Sequence[int] = (1, 2, 4, 8, 16), probe: bool | None = None,
                        reps: int = 2) -> int:
        """How many grid points `evaluate_many` should take per pass (the landscape's points_per_pass = 0).

        1 on the CPU (measured there, benchmarks/README.md: a stacked pass costs more per point than
        single points) and in statistical mode, without a probe. On CUDA a short probe on the first
        batch: after one untimed warm-up of each size, REPS timed passes of one point (the in-place
        path `evaluate` takes) and of n stacked points per n in CANDIDATES, costed per point; a larger n
        wins only when it is at least 10% faster per point than the best so far, and a size that fails
        (out of memory, no vmap rule) ends the search. PROBE=True probes on any device, False never."""
        device = next(self.model.parameters()).device
        if self.statistical or not (device.type == "cuda" if probe is None else probe):
            return 1
        first = self.samples.batches[:1]

        def single():
            self.offsets.set((0.1,) * len(self.offsets.directions))
            x = first[0][0]
            per_sample_nll(self.model(x), first[0][1]).sum().item()

        def clock(fn) -> float:
            fn()  # warm-up (kernels, caching allocator)
            times = sorted(seconds(fn, device) for _ in range(max(1, reps)))
            return times[len(times) // 2]

        best, best_rate = 1, math.inf
        with torch.no_grad():
            try:
                best_rate = clock(single)
                for n in sorted({int(c) for c in candidates if int(c) > 1}):
                    pts = [(0.1 * (k + 1),) * len(self.offsets.directions) for k in range(n)]
                    try:
                        rate = clock(lambda: self._stacked_sums(pts, first)) / n
                    except (RuntimeError, NotImplementedError):  # out of memory or no batching rule
                        break
                    if rate < 0.9 * best_rate:
                        best, best_rate = n, rate
            finally:
                self.offsets.restore()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        return best

    def cell_anchors(self, coords: Sequence[float]) -> list[tuple]:
        """The anchors at the corners of the anchor-lattice cell holding COORDS (those that exist).

        Per axis the nearest anchor coordinate at or below and at or above (one when it is on an
        anchor line or outside the lattice); the corners are all their combinations."""
        if not self.anchors:
            return []
        per_axis = []
        for k, c in enumerate(coords):
            values = sorted({a[k] for a in self.anchors})
            below = [v for v in values if v <= c]
            above = [v for v in values if v >= c]
            per_axis.append(sorted({below[-1] if below else above[0], above[0] if above else below[-1]}))
        corners = [()]
        for values in per_axis:
            corners = [corner + (v,) for corner in corners for v in values]
        return [corner for corner in corners if corner in self.anchors]

    @torch.no_grad()
    def _run(self, coords, keep: bool, stop: bool):
        self.offsets.set(coords)
        self.points_evaluated += 1
        l2 = l2_term(self.all_params, self.l2_kind)
        controls = self._controls(coords) if stop else None
        nll_sum, correct_sum, n = 0.0, 0.0, 0
        nll_parts, correct_parts = [], []
        finite = math.isfinite(l2)
        estimate = (math.nan, math.nan, 0.0)
        passed = 0  # consecutive checks that met the tolerance
        for b, (x, target, label) in enumerate(self.samples.batches):
            checkpoint()  # a worker may stop the job here
            logits = self.model(x)
            nll = per_sample_nll(logits, target).double()
            correct = (logits.argmax(dim=1) == label).double()
            n += len(nll)
            self.samples_evaluated += len(nll)
            nll_sum += float(nll.sum())
            correct_sum += float(correct.sum())
            if not torch.isfinite(nll).all():
                finite = False
                break  # a non-finite point stays non-finite: no need to look further
            if keep:
                nll_parts.append(nll.cpu())
                correct_parts.append(correct.cpu())
            if stop and n < self.population:
                estimate = self._statistical_estimate(nll_parts, correct_parts, controls)
                loss = estimate[0] + self.weight_decay * l2
                met = self.z * estimate[2] <= max(self.tolerance, self.rtol * abs(loss))
                passed = passed + 1 if met else 0
                # two checks in a row and a minimum sample: see the module docstring
                if passed >= 2 and n >= self.min_samples and b + 1 >= self.min_batches:
                    break
        if finite and n < self.population:
            nll_mean, accuracy, stderr = estimate
        else:
            nll_mean, accuracy, stderr = nll_sum / n, correct_sum / n, 0.0
        row = self._row(nll_mean, accuracy, l2, n, stderr, finite)
        per_sample = (torch.cat(nll_parts), torch.cat(correct_parts)) if keep and nll_parts else None
        return row, per_sample

    def _controls(self, coords):
        """(nll controls, their means, correct controls, their means) of COORDS' cell, or None."""
        corners = self.cell_anchors(tuple(float(c) for c in coords))
        if not corners:
            return None
        nll = torch.stack([self.anchors[c][0] for c in corners], dim=1)
        correct = torch.stack([self.anchors[c][1] for c in corners], dim=1)
        return nll, nll.mean(dim=0), correct, correct.mean(dim=0)

    def _statistical_estimate(self, nll_parts, correct_parts, controls) -> tuple[float, float, float]:
        y, c = torch.cat(nll_parts), torch.cat(correct_parts)
        n = len(y)
        if controls is not None:
            cn, cn_mean, cc, cc_mean = controls
            nll, se = _estimate(y, cn[:n], cn_mean, self.population)
            acc, _ = _estimate(c, cc[:n], cc_mean, self.population)
            acc = min(max(acc, 0.0), 1.0)  # the regression estimate of a proportion can overshoot
        else:
            nll, se = _estimate(y, None, None, self.population)
            acc, _ = _estimate(c, None, None, self.population)
        return nll, acc, se

    def restore(self) -> None:
        self.offsets.restore()
