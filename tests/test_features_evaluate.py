"""Evaluation (issue 7, item 8): ECE of a calibrated predictor, accuracy and NLL against a direct loop."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from vitlens.context import Context
from vitlens.request import JobSpec
from vitlens.analyses.evaluate import evaluate
from vitlens.metrics import Scores, calibration_bins, expected_calibration_error
from vitlens.data import load_data
from vitlens.models import load_model
from vitlens.progress import Progress

from conftest import device_under_test


def _calibrated(n, classes=10, seed=0):
    """Predictions whose top class is right with probability exactly equal to their confidence."""
    g = torch.Generator().manual_seed(seed)
    conf = 0.1 + 0.9 * torch.rand(n, generator=g)
    pred = torch.randint(classes, (n,), generator=g)
    probs = ((1 - conf) / (classes - 1)).unsqueeze(1).repeat(1, classes)
    probs[torch.arange(n), pred] = conf
    right = torch.rand(n, generator=g) < conf
    other = (pred + torch.randint(1, classes, (n,), generator=g)) % classes
    return probs, torch.where(right, pred, other)


def test_ece_of_calibrated_predictor_is_near_zero_and_of_overconfident_is_not():
    probs, labels = _calibrated(40000)
    assert expected_calibration_error(calibration_bins(probs, labels, 15)) < 0.01
    sharp = (probs.log() * 3).softmax(1)  # same ranking, overconfident
    assert expected_calibration_error(calibration_bins(sharp, labels, 15)) > 0.1


def test_evaluate_accuracy_and_nll_equal_a_direct_loop():
    torch.manual_seed(0)
    model = load_model("demo_resnet").eval()
    dataset = load_data("digits", "test", samples=30, model=model)
    device = device_under_test()
    spec = JobSpec(analysis="evaluate", samples=30, batch_size=8, device=str(device))
    on_device = copy.deepcopy(model).to(device) if device.type != "cpu" else model
    ctx = Context(on_device, dataset, spec, device, lambda total, desc: Progress(total, desc))
    summary = evaluate(ctx, {"bins": 10}).meta["summary"]
    correct, nll, scores = 0, 0.0, Scores()
    with torch.no_grad():
        for i in range(len(dataset)):
            x, y = dataset[i]
            logits = model(x.unsqueeze(0))[0]
            correct += int(logits.argmax() == y)
            nll -= float(F.log_softmax(logits, 0)[y])
            scores.add(logits.unsqueeze(0), torch.tensor([y]))
    assert summary["accuracy"] == pytest.approx(correct / 30)
    assert summary["nll"] == pytest.approx(nll / 30, rel=1e-5)
    assert scores.accuracy == pytest.approx(correct / 30) and scores.nll == pytest.approx(nll / 30, rel=1e-5)
    assert math.isfinite(summary["ece"])
