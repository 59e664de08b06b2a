"""Where runs execute: this process, local worker processes, or a Ray or Dask cluster.

Runs are independent, so this is a plain parallel map through joblib, whose backends already
cover local processes (loky), Dask and Ray; nothing here is a scheduler of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TypeVar

import joblib

Key = TypeVar("Key")
Result = TypeVar("Result")


def _cluster_backend(address: str, stack: ExitStack) -> str:
    """Connect to the cluster at `address` and return the joblib backend name to use.

    "ray://host:port" or "ray:auto" selects Ray; anything else (tcp://, tls://, inproc://)
    is taken as a Dask scheduler address.

    Raises:
        ImportError: the cluster library is not installed (pip install 'ratingparty[cluster]').
    """
    if address.startswith("ray:"):
        try:
            import ray
            from ray.util.joblib import register_ray
        except ImportError as error:  # pragma: no cover - depends on the optional extra
            raise ImportError("Ray is not installed: pip install 'ratingparty[cluster]'") from error
        ray.init(address="auto" if address == "ray:auto" else address, ignore_reinit_error=True)
        stack.callback(ray.shutdown)
        register_ray()
        return "ray"
    try:
        from dask.distributed import Client
    except ImportError as error:  # pragma: no cover - depends on the optional extra
        raise ImportError("Dask is not installed: pip install 'ratingparty[cluster]'") from error
    stack.enter_context(Client(address))
    return "dask"


def map_runs(
    function: Callable[[Key], Result],
    keys: Sequence[Key],
    *,
    jobs: int = 1,
    address: str | None = None,
    progress: Callable[[Key, Result], None] | None = None,
) -> list[Result]:
    """`[function(k) for k in keys]`, in order, computed in parallel.

    Args:
        function: a picklable top-level function.
        keys: its inputs.
        jobs: local worker processes when no address is given (1 = in this process).
        address: a Ray or Dask scheduler address to run on instead.
        progress: called with each key and its result as it finishes (completion order).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if address is None and jobs == 1:
        results = []
        for key in keys:
            results.append(function(key))
            if progress:
                progress(key, results[-1])
        return results
    with ExitStack() as stack:
        if address is not None:
            backend, n_jobs = _cluster_backend(address, stack), -1
        else:
            backend, n_jobs = "loky", jobs
        stack.enter_context(joblib.parallel_config(backend=backend, n_jobs=n_jobs))
        indexed = joblib.Parallel(return_as="generator_unordered")(
            joblib.delayed(_indexed)(function, index, key) for index, key in enumerate(keys)
        )
        results: list[Result | None] = [None] * len(keys)
        for index, result in indexed:
            results[index] = result
            if progress:
                progress(keys[index], result)
    return results  # type: ignore[return-value]


def _indexed(function: Callable[[Key], Result], index: int, key: Key) -> tuple[int, Result]:
    return index, function(key)


__all__ = ["map_runs"]
