"""smx: accurate softmax, log-softmax and cross-entropy, with diagnostics.

The Python API is the one the ``smx`` commands use::

    >>> import smx_cli
    >>> smx_cli.softmax([1.0, 2.0, 3.0]).round(4)
    array([0.09  , 0.2447, 0.6652])
"""
from importlib.metadata import PackageNotFoundError, version

from smx_cli.diagnostics import SoftmaxDiagnostics, diagnose
from smx_cli.errors import SmxError
from smx_cli.io import read_array
from smx_cli.precision import FORMATS, ulp_error
from smx_cli.reference import exact_softmax
from smx_cli.softmax import VARIANTS, compute, log_softmax, logsumexp, softmax

try:
    __version__ = version("smx-cli")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "softmax", "log_softmax", "logsumexp", "compute", "VARIANTS", "FORMATS",
    "diagnose", "SoftmaxDiagnostics", "read_array", "exact_softmax", "ulp_error",
    "SmxError", "__version__",
]
