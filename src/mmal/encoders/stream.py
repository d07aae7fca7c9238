"""Decoding and preprocessing in worker threads, overlapping the forward pass.

The towers spend their time in three places: decoding a file (PIL, PyAV), preprocessing
(resize / log-mel) and the forward pass. The first two run here in a small thread pool
while the caller runs the forward pass of the batch before: PIL's decoders and resizers,
PyAV's decoders and ``torch.stft`` release the GIL, so the threads overlap with the
forward pass (which releases it too) without pickling anything to another process, and
an error in a worker (a corrupt file's :class:`~mmal.errors.MediaError`) is re-raised in
the caller as the same exception, one line from the CLI.

Measured on the 2-core bench machine (``bench/results/encode.json``): with the machine
busy (load average above its core count), two intra-op torch threads made the forward
pass 3-30x slower than one (OpenMP threads waiting for each other on preempted cores), so
:func:`forward_threads` gives torch the cores that the load leaves free, at least one.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def forward_threads(cores: int, load: float, own: float = 1.0) -> int:
    """Intra-op torch threads for the forward pass: the cores other processes leave free, in ``1..cores``.

    ``load`` is the 1-minute load average when encoding starts. It counts this process too,
    which has just been reading items and loading towers, so ``own`` (1.0) of it is taken
    as ours: ``round(cores - max(0, load - own))`` cores are free. One thread when other work
    saturates the machine, all cores when it is otherwise idle. Measured on 2 cores
    (``bench/encode.py``): with the load at 6-8 from other jobs one thread ran the image
    forward pass 3.6x faster than two; on an otherwise idle machine (load 1.2, the bench
    itself) two threads ran it 1.5x faster than one, and counting the bench's own load as
    other work had cost the end-to-end encode 28 %.
    """
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    others = max(0.0, float(load) - max(0.0, float(own)))
    return int(min(cores, max(1, round(cores - others))))


def default_workers(cores: int | None = None) -> int:
    """Decode/preprocess threads: one per core, at most 4 (they wait whenever the window is full)."""
    return int(min(4, cores or available_cores()))


def encode_threads() -> int | None:
    """The thread count :func:`torch_threads` should use for an encode run, or None to leave torch as it is.

    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set by the user win (torch read them at start);
    otherwise :func:`forward_threads` of the available cores and the current load.
    """
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    return forward_threads(available_cores(), os.getloadavg()[0])


def prefetch_map(fn, batches, *, workers: int, ahead: int = 2):
    """Yield ``[fn(x) for x in batch]`` for each batch, computed ``ahead`` batches in advance.

    Parameters
    ----------
    fn : callable
        Applied to every element (decode + preprocess one item).
    batches : iterable of lists
    workers : int
        Threads; ``0`` computes each batch in the caller's thread when it is asked for
        (the plain sequential loop, nothing ahead).
    ahead : int
        Batches submitted beyond the one being consumed (bounds the memory held).

    An exception raised by ``fn`` is raised here, when its batch is reached, as the same
    exception; the work not yet started is cancelled.
    """
    if workers <= 0:
        for batch in batches:
            yield [fn(x) for x in batch]
        return
    pool = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="mmal-decode")
    queue: deque = deque()
    it = iter(batches)
    try:
        for batch in it:
            queue.append([pool.submit(fn, x) for x in batch])
            if len(queue) > ahead:
                yield [f.result() for f in queue.popleft()]
        while queue:
            yield [f.result() for f in queue.popleft()]
    finally:
        for futures in queue:
            for f in futures:
                f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
