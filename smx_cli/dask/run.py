"""Where a Dask computation runs, and a progress callback over its tasks.

``scheduler`` is ``"synchronous"``, ``"threads"``, ``"processes"`` (dask's
local schedulers), the address of a running ``dask.distributed`` scheduler
(``tcp://host:8786``), a ``distributed.Client``, or None for dask's current
default (an active Client when there is one). A distributed scheduler
reruns the tasks of a worker that dies, so the result does not change.
"""
from __future__ import annotations

from contextlib import contextmanager

from smx_cli.errors import SmxError

LOCAL = ("synchronous", "threads", "processes")
# seconds to reach a scheduler before giving up
CONNECT_TIMEOUT = 10


def check_scheduler(spec: str) -> str:
    """``spec`` if it names a local scheduler or looks like an address; else ValueError.

    Examples
    --------
    >>> check_scheduler("tcp://127.0.0.1:8786")
    'tcp://127.0.0.1:8786'
    >>> check_scheduler("thread")
    Traceback (most recent call last):
    ...
    ValueError: 'thread' is not threads, processes, synchronous or a scheduler address (tcp://host:port)
    """
    if spec in LOCAL or "://" in spec or (":" in spec and spec.rsplit(":", 1)[1].isdigit()):
        return spec
    raise ValueError(f"{spec!r} is not threads, processes, synchronous or a scheduler address "
                     "(tcp://host:port)")


@contextmanager
def client_for(scheduler):
    """Yield what :func:`compute` runs on: a local scheduler name, a Client, or None."""
    if scheduler is None or scheduler in LOCAL or not isinstance(scheduler, str):
        yield scheduler
        return
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - the dask extra installs it
        raise SmxError("a scheduler address needs dask.distributed: pip install "
                       "'smx-cli[dask]'") from None
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SmxError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
    try:
        yield client
    finally:
        client.close()


def compute(tasks, scheduler=None, progress=None) -> list:
    """Compute a list of dask collections; ``progress(done, total)`` after each task.

    Local schedulers count every task of the graph; on a distributed
    scheduler the listed collections are counted as they finish.

    Examples
    --------
    >>> import dask.array as da
    >>> seen = []
    >>> compute([da.ones(4, chunks=2).sum()], "synchronous", lambda d, t: seen.append(d))
    [np.float64(4.0)]
    >>> seen[-1] == len(seen)
    True
    """
    import dask

    tasks = list(tasks)
    if not isinstance(scheduler, (str, type(None))):  # a distributed Client
        return _on_client(scheduler, tasks, progress)
    if scheduler is None:
        from dask.base import get_scheduler

        client = getattr(get_scheduler(), "__self__", None)
        if client is not None and type(client).__name__ == "Client":
            return _on_client(client, tasks, progress)
    if progress is None:
        return list(dask.compute(*tasks, scheduler=scheduler))
    from dask.callbacks import Callback

    state = {"done": 0, "total": 0}

    def start(dsk):
        state["total"] = len(dsk)

    def posttask(key, result, dsk, st, worker_id):
        state["done"] += 1
        progress(state["done"], max(state["total"], state["done"]))

    with Callback(start=start, posttask=posttask):
        return list(dask.compute(*tasks, scheduler=scheduler))


def _on_client(client, tasks, progress) -> list:
    from distributed import as_completed

    futures = client.compute(tasks, retries=2)
    if progress is not None:
        for i, _ in enumerate(as_completed(futures, loop=client.loop), 1):
            progress(i, len(futures))
    return client.gather(futures)
