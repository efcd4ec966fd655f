"""smx on Dask: the softmax family and cross-entropy over arrays that outgrow one machine.

Needs the optional extra: ``pip install 'smx-cli[dask]'`` (dask[array],
distributed, zarr). Every function takes dask arrays and runs smx's own
kernels per block; reductions merge exactly across blocks (counts and
histograms as integers, sums as exact ``fsum`` expansions), so the results
equal the single-machine path's (bit for bit where the algorithm is the
same; a class axis split across chunks goes through the two-stage
online-softmax reduction, within 4 ulps). dask itself is imported only when
a function runs.

- :func:`compute`, :func:`softmax`, :func:`log_softmax`, :func:`logsumexp`
  (lazy dask arrays);
- :func:`cross_entropy`, :func:`xent_summary` (the ``smx xent`` summary);
- :func:`softmax_report` (diagnostics over every chunk, first rows, Zarr output);
- :func:`open_array`, :func:`open_labels` (Zarr stores, NPY files and globs of NPY shards).
"""
from smx_cli.dask.ops import compute, log_softmax, logsumexp, softmax
from smx_cli.dask.report import SoftmaxReport, merge_accumulators, softmax_report
from smx_cli.dask.sources import open_array, open_labels
from smx_cli.dask.xent import XentSummary, cross_entropy, xent_summary

__all__ = ["compute", "softmax", "log_softmax", "logsumexp", "cross_entropy", "xent_summary",
           "XentSummary", "softmax_report", "SoftmaxReport", "merge_accumulators", "open_array",
           "open_labels"]
