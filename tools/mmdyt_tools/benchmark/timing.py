"""Interleaved timing of several models on the same inputs.

The clocks are the host's: ``time.perf_counter`` (wall time, the default)
or ``time.process_time`` (the CPU time of this process). On a CPU the
timed region is the forward itself. When CUDA is in use in this process
(``torch.cuda.is_initialized()``, i.e. some model or input lives on a GPU)
every timed region is bracketed by ``torch.cuda.synchronize()``, so that a
time covers the kernels a forward launched, not only their launch; the
``'cpu'`` clock then still counts host CPU time only and should not be used
to compare GPU models. The ``'events'`` clock (CUDA only) times each
forward with a pair of CUDA events on the current stream: the GPU's own
time from the forward's first kernel to its last.
"""
import time
from functools import partial
from typing import Callable, Dict, List

import torch
from torch import Tensor

#: Clocks :func:`time_interleaved` can use: wall time, or the CPU time of
#: this process (all its threads), which other processes on a shared machine
#: disturb less (use it with ``torch.set_num_threads(1)``).
TIMERS = {'wall': time.perf_counter, 'cpu': time.process_time}

#: Every clock :func:`time_interleaved` accepts: :data:`TIMERS` and CUDA
#: events.
CLOCKS = (*TIMERS, 'events')


def time_interleaved(models: Dict[str, Callable[[Tensor], object]],
                     inputs: Tensor,
                     warmup: int = 2,
                     repeats: int = 10,
                     timer: str = 'wall') -> Dict[str, List[float]]:
    """Time forwards of several models on the same inputs.

    Each repeat runs every model once, in an order rotated by one model per
    repeat, so that slow phases of a shared machine hit all models alike.
    Runs under ``torch.inference_mode``; on a GPU each timed forward is
    bracketed by ``torch.cuda.synchronize()`` (see the module's docstring).

    Args:
        models (dict[str, Callable]): Forward functions by name.
        inputs (Tensor): The batch every model runs on.
        warmup (int): Untimed forwards of each model first. Defaults to 2.
        repeats (int): Timed forwards of each model. Defaults to 10.
        timer (str): A clock of :data:`CLOCKS`. Defaults to ``'wall'``.

    Returns:
        dict[str, list[float]]: The times (ms) of each model's forwards.
    """
    if timer not in CLOCKS:
        raise ValueError(f'timer must be one of {sorted(CLOCKS)}, got '
                         f'{timer!r}')
    if timer == 'events' and not cuda_in_use():
        raise ValueError("the 'events' timer needs CUDA in use (models and "
                         'inputs on a GPU)')
    timed = _time_with_events if timer == 'events' else partial(
        _time_with_clock, TIMERS[timer],
        _synchronize if cuda_in_use() else _no_sync)
    names = list(models)
    times: Dict[str, List[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                models[name](inputs)
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(timed(models[name], inputs))
    return times


def _time_with_clock(clock: Callable[[], float], sync: Callable[[], None],
                     model: Callable[[Tensor], object],
                     inputs: Tensor) -> float:
    """One forward's time (ms) on a host clock, synchronised around."""
    sync()
    start = clock()
    model(inputs)
    sync()
    return (clock() - start) * 1e3


def _time_with_events(model: Callable[[Tensor], object],
                      inputs: Tensor) -> float:
    """One forward's time (ms) between two CUDA events."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    model(inputs)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def cuda_in_use() -> bool:
    """Whether this process has initialised CUDA (so a model or an input
    may live on a GPU and its kernels run asynchronously)."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _synchronize() -> None:
    torch.cuda.synchronize()


def _no_sync() -> None:
    pass
