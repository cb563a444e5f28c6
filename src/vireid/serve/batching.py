"""Request batching for the service: concurrent queries embedded together by one worker thread.

The worker takes the first waiting query at once, so a lone query goes straight through (no added
latency). Queries that arrive while a forward pass runs queue up and are embedded together by the
next one, up to `batch_size`; the worker waits up to `wait_ms` for more only while other requests are
still being decoded (`arriving` > 0), never when the queue is all there is. One worker means one forward
pass at a time, so the intra-op threads of the model are never oversubscribed by concurrent requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..core import Modality

_STOP = object()


class EmbedBatcher:
    """`await batcher.embed(image, modality)` -> (1, D) features; concurrent calls share forward passes."""

    def __init__(self, extractor: Callable[[list[Any], list[Modality]], np.ndarray], *, batch_size: int = 16,
                 wait_ms: float = 2.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must be >= 0, got {wait_ms}")
        self.extractor = extractor
        self.batch_size = int(batch_size)
        self.wait_s = float(wait_ms) / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._arriving = 0  # requests admitted but not yet queued (their upload is being read or decoded)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []  # sizes of the last forward passes (bounded), for tests and /health

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as on its way (reading and decoding its image) so a forming batch may wait for it."""
        with self._lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._lock:
                self._arriving -= 1

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="vireid-embed", daemon=True)
                self._thread.start()

    def submit(self, image: Any, modality: Modality) -> Future:
        """Queue one decoded image; the future gets its (1, D) features or the extractor's exception."""
        fut: Future = Future()
        self._start()
        self._queue.put((image, modality, fut))
        return fut

    async def embed(self, image: Any, modality: Modality) -> np.ndarray:
        """(1, D) features of one image, embedded in the worker thread (never on the event loop)."""
        return await asyncio.wrap_future(self.submit(image, modality))

    def close(self) -> None:
        """Stop the worker after the queries already queued."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)

    def _gather(self, first: Any) -> tuple[list[Any], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.batch_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                with self._lock:
                    others = self._arriving
                if others <= 0 or remaining <= 0:
                    break  # nobody else is on the way: run now rather than wait for no one
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is _STOP:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[Any]) -> None:
        self.batches = [*self.batches[-99:], len(batch)]
        try:
            feats = self.extractor([b[0] for b in batch], [b[1] for b in batch])
        except Exception as exc:  # noqa: BLE001 - retried one by one below, so one bad image fails alone
            if len(batch) == 1:
                _settle(batch[0][2], None, exc)
                return
            for job in batch:
                self._run([job])
            return
        for i, (_, _, fut) in enumerate(batch):
            _settle(fut, feats[i:i + 1], None)


def _settle(fut: Future, result: Any, exc: BaseException | None) -> None:
    if fut.set_running_or_notify_cancel():
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
