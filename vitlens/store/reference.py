"""The paper's own published data as reference Results, to put beside a user's.

The authors published the data of their Fig 1b loss landscapes (ViT-Ti and ResNet-50 on CIFAR-100,
their checkpoints and settings; `vitlens/assets/paper/NOTICE`, Apache-2.0). `reference(NAME)`
returns one as a `Result` shaped like the `landscape` analysis' (x, y, loss, nll, l2, accuracy,
finite), with every column of the file kept under the authors' names and the values exactly the
file's. loss = NLL + weight_decay * l2 as their notebook computes it, with each model's training
weight decay.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from ..errors import VitlensError
from ..result import Result

# the column names of the authors' losslandscape.ipynb (their CSVs have no header)
PAPER_COLUMNS = ["x", "y", "l1", "l2", "NLL", "Cutoff1", "Cutoff2", "Acc", "Acc-90", "Unc", "Unc-90", "IoU",
                 "IoU-90", "Freq", "Freq-90", "Top-5", "Brier", "ECE", "ECSE"]
SOURCE = "Park & Kim (ICLR 2022) Fig 1b data, github xxxnell/how-do-vits-work resources/results (Apache-2.0)"


@dataclass(frozen=True)
class Reference:
    name: str
    file: str
    model: str
    weight_decay: float  # the model's training weight decay (the authors' configs)
    description: str


REFERENCES = {r.name: r for r in [
    Reference("paper:vit_ti_cifar100_landscape", "cifar100_vit_ti_losslandscape.csv", "ViT-Ti", 0.05,
              "ViT-Ti on CIFAR-100: loss landscape, 21x21 over [-1, 1]^2 (paper Fig 1b)"),
    Reference("paper:resnet50_cifar100_landscape", "cifar100_resnet_dnn_50_losslandscape.csv", "ResNet-50", 5e-4,
              "ResNet-50 on CIFAR-100: loss landscape, 21x21 over [-1, 1]^2 (paper Fig 1b)"),
]}


def list_references() -> list[Reference]:
    return list(REFERENCES.values())


def read_paper_csv(file: str) -> pd.DataFrame:
    """One of the shipped CSVs with the authors' column names, values as in the file."""
    with resources.files("vitlens").joinpath("assets", "paper", file).open("r") as handle:
        return pd.read_csv(handle, names=PAPER_COLUMNS, header=None)


def reference(name: str) -> Result:
    """The reference Result NAME (`vitlens reference list`)."""
    if name not in REFERENCES:
        raise VitlensError(f"unknown reference '{name}'; available: {', '.join(REFERENCES)}")
    ref = REFERENCES[name]
    paper = read_paper_csv(ref.file)
    xs, ys = np.sort(paper["x"].unique()), np.sort(paper["y"].unique())
    frame = pd.DataFrame({
        "i": np.searchsorted(xs, paper["x"]), "j": np.searchsorted(ys, paper["y"]),
        "x": paper["x"], "y": paper["y"],
        "loss": paper["NLL"] + ref.weight_decay * paper["l2"], "nll": paper["NLL"], "l2": paper["l2"],
        "accuracy": paper["Acc"],
        "finite": np.isfinite(paper["NLL"]),
    })
    frame = pd.concat([frame, paper.drop(columns=["x", "y"]).add_prefix("paper_")], axis=1)
    caption = (f"the paper's {ref.model} (CIFAR-100, the authors' checkpoint and settings; loss = NLL + "
               f"{ref.weight_decay:g} * l2) · {SOURCE}")
    return Result(frame, {"analysis": "landscape", "reference": True, "name": name, "model": ref.model,
                          "dims": 2, "source": SOURCE, "caption": caption, "weight_decay": ref.weight_decay,
                          "params": {"directions": "random"}, "summary": {}})
