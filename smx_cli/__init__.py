"""smx: accurate softmax, log-softmax and cross-entropy, with diagnostics.

The Python API is the one the ``smx`` commands use::

    >>> import smx_cli
    >>> smx_cli.softmax([1.0, 2.0, 3.0]).round(4)
    array([0.09  , 0.2447, 0.6652])
    >>> float(smx_cli.cross_entropy([[30.0, 0.0]], [0]))  # log(softmax) would say 0
    9.357622968839737e-14
"""
from importlib.metadata import PackageNotFoundError, version

from smx_cli.diagnostics import SoftmaxDiagnostics, diagnose
from smx_cli.errors import SmxError
from smx_cli.family import entmax15, entmax_bisect, gumbel_softmax, hardmax, sparsemax
from smx_cli.grad import (check_grad, log_softmax_vjp, saturation, softmax_jacobian,
                          softmax_vjp)
from smx_cli.io import read_array
from smx_cli.precision import FORMATS, ulp_error
from smx_cli.reference import exact_softmax
from smx_cli.softmax import VARIANTS, compute, log_softmax, logsumexp, softmax
from smx_cli.xent import cross_entropy, cross_entropy_grad, nll_loss

try:
    __version__ = version("smx-cli")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "softmax", "log_softmax", "logsumexp", "compute", "VARIANTS", "FORMATS",
    "cross_entropy", "nll_loss", "cross_entropy_grad",
    "softmax_jacobian", "softmax_vjp", "log_softmax_vjp", "check_grad", "saturation",
    "hardmax", "sparsemax", "entmax15", "entmax_bisect", "gumbel_softmax",
    "diagnose", "SoftmaxDiagnostics", "read_array", "exact_softmax", "ulp_error",
    "SmxError", "__version__",
]
