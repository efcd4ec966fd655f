"""Overlapped I/O for the streams: read the next block and write the last one
while the current block is computed.

Both helpers run one background thread (file reads and writes release the
GIL, and so do the numeric kernels), keep memory bounded by a fixed number of
blocks in flight, stop their thread before returning (on success, on an
error and on KeyboardInterrupt alike), and re-raise a background error in the
caller's thread at the next call.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

_END = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetched(fill: Callable[[int, object], object], steps: int,
               buffers: list) -> Iterator[object]:
    """Yield ``fill(k, buffer)`` for k = 0 .. steps-1, filled one step ahead on a thread.

    ``fill(k, buf)`` reads step k into ``buf`` (one of ``buffers``, used in
    rotation) and returns what to yield. A buffer is refilled only after the
    consumer has asked for the step that follows its last use, so a yielded
    block stays valid until the next one is requested.

    Examples
    --------
    >>> list(prefetched(lambda k, buf: (k, buf), 3, ["A", "B"]))
    [(0, 'A'), (1, 'B'), (2, 'A')]
    """
    free = threading.Semaphore(len(buffers))
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()

    def reader():
        try:
            for k in range(steps):
                free.acquire()
                if stop.is_set():
                    return
                ready.put(fill(k, buffers[k % len(buffers)]))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            ready.put(_Failed(exc))
            return
        ready.put(_END)

    thread = threading.Thread(target=reader, name="smx-read", daemon=True)
    thread.start()
    first = True
    try:
        while True:
            if not first:
                free.release()  # the consumer is done with the previous block
            first = False
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        free.release()
        thread.join()


class BackgroundWriter:
    """Write byte blocks to an open file on a thread, at most ``depth`` pending.

    Use as a context manager; ``put(data)`` hands a bytes-like block over (it
    must not be modified afterwards). Leaving the block normally waits for
    every write and re-raises a write error; leaving it with an exception
    drops what is pending and stops the thread before the exception goes on
    (so an atomic output can then be removed safely).

    Examples
    --------
    >>> import io
    >>> buf = io.BytesIO()
    >>> with BackgroundWriter(buf.write) as w:
    ...     w.put(b"ab")
    ...     w.put(b"cd")
    >>> buf.getvalue()
    b'abcd'
    """

    def __init__(self, write: Callable[[object], object], depth: int = 2):
        self._write = write
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="smx-write", daemon=True)

    def _run(self):
        while True:
            item = self._q.get()
            if item is _END or self._abort:
                return
            try:
                self._write(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
                self._abort = True

    def _check(self):
        if self._error is not None:
            raise self._error

    def put(self, data) -> None:
        """Queue ``data`` for writing (blocks while ``depth`` writes are pending)."""
        self._check()
        self._q.put(data)

    def __enter__(self) -> "BackgroundWriter":
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._abort = True
            while True:  # drop what is pending so the sentinel fits
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break
        self._q.put(_END)
        self._thread.join()
        if exc_type is None:
            self._check()
        return False
