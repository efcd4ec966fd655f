"""smx: accurate softmax, log-softmax and cross-entropy, with diagnostics.

The Python API is the one the ``smx`` commands use::

    >>> import smx_cli
    >>> smx_cli.softmax([1.0, 2.0, 3.0]).round(4)
    array([0.09  , 0.2447, 0.6652])
    >>> float(smx_cli.cross_entropy([[30.0, 0.0]], [0]))  # log(softmax) would say 0
    9.357622968839737e-14
"""
from importlib import import_module

# The API is loaded on first use (PEP 562), so that `smx --help` and the
# console script do not import numpy before they need it.
_API = {
    "softmax": "core.softmax", "log_softmax": "core.softmax", "logsumexp": "core.softmax",
    "compute": "core.softmax", "VARIANTS": "core.softmax", "ALL_VARIANTS": "core.softmax",
    "xent": "core.xent", "evaluate": "core.xent",
    "cross_entropy": "core.xent", "nll_loss": "core.xent", "cross_entropy_grad": "core.xent",
    "read_safetensors": "io.safetensors",
    "softmax_jacobian": "core.grad", "softmax_vjp": "core.grad", "log_softmax_vjp": "core.grad",
    "check_grad": "core.grad", "saturation": "core.grad",
    "hardmax": "core.sparse", "sparsemax": "core.sparse", "entmax15": "core.sparse",
    "entmax_bisect": "core.sparse", "gumbel_softmax": "core.sparse",
    "compare_stability": "analysis.compare", "sweep": "analysis.sweep",
    "diagnose": "analysis.diagnostics", "SoftmaxDiagnostics": "analysis.diagnostics",
    "read_array": "io", "exact_softmax": "core.reference", "ulp_error": "core.precision",
    "FORMATS": "core.precision", "SmxError": "errors",
    "calibrate": "analysis.calibrate", "fit_temperature": "analysis.calibrate",
    "ece": "analysis.calibration", "calibration_metrics": "analysis.calibrate",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(f"smx_cli.{_API[name]}"), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("smx-cli")
        except PackageNotFoundError:  # running from a source tree
            v = "0+unknown"
        globals()["__version__"] = v
        return v
    raise AttributeError(f"module 'smx_cli' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
