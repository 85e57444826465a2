"""Hessian of the training loss: Hessian-vector products, Lanczos top-k, trace, density, spectra.

    from vitlens.hessian import LossConfig, top_eigenvalues, hessian_trace, eigenvalue_density
    top = top_eigenvalues(model, (x, y), k=5)                 # largest |eigenvalue| first, sign kept
    tr = hessian_trace(model, loader, estimator="krylov")    # tr.estimate +- tr.stderr
    dens = eigenvalue_density(model, loader, runs=5)          # dens.grid, dens.density, dens.nodes/weights
    spec = max_eigenvalue_spectrum(model, minibatches, k=5)   # spec.rows, spec.summary() -> NEP, APE
    spec = max_eigenvalue_spectrum(model, minibatches, together="auto")  # stacked products on a GPU

The loss (loss.py) is cross-entropy with hard or soft targets + (weight_decay/2)||w||^2, eval mode by
default; the model's mode, buffers, RNG and attention settings are restored after every call.
Layers: loss.py (the loss and the model state), hvp.py (HessianOperator: H v on flat vectors),
lanczos.py / trace.py / density.py (linear algebra on any matvec), spectrum.py (model-level
functions), pyhessian_engine.py (PyHessian 0.1 as an optional engine).
"""
from .density import Density, slq
from .hvp import ENGINES, HessianOperator
from .lanczos import Eigenpairs, Tridiagonal, error_bounds, lanczos, top_eigenpairs
from .loss import LossConfig, cross_entropy, hessian_mode, prepare_batches, total_loss, trainable_parameters
from .spectrum import (Spectrum, TopK, auto_together, block_curvature, eigenvalue_density, hessian_operator,
                       hessian_trace, max_eigenvalue_spectrum, spectrum_summary, top_eigenvalues)
from .trace import TraceEstimate, hutchinson, hutchpp, krylov_deflated

__all__ = ["Density", "slq", "ENGINES", "HessianOperator", "Eigenpairs", "Tridiagonal", "error_bounds", "lanczos",
           "top_eigenpairs", "LossConfig", "cross_entropy", "hessian_mode", "prepare_batches", "total_loss",
           "trainable_parameters", "Spectrum", "TopK", "auto_together", "block_curvature", "eigenvalue_density",
           "hessian_operator", "hessian_trace", "max_eigenvalue_spectrum", "spectrum_summary", "top_eigenvalues",
           "TraceEstimate", "hutchinson", "hutchpp", "krylov_deflated"]
