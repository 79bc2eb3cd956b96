"""Counting a forward's host synchronisations on a GPU.

A CUDA kernel launch returns at once; an operation whose result the host
must read (``nonzero``'s output size, ``.item()``, a copy to the CPU) waits
for every kernel launched before it, and the GPU idles while the host
catches up. DyT's gathered MLP reads the number of active tokens once per
dispatch site. :func:`count_host_syncs` counts them with torch's
synchronisation debug mode.
"""
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor


def count_host_syncs(model: Callable[[Tensor], object],
                     inputs: Tensor) -> Optional[int]:
    """The host synchronisations of one forward of ``model`` on ``inputs``.

    Args:
        model (Callable): The model (run under ``torch.inference_mode``).
        inputs (Tensor): Its input.

    Returns:
        int or None: The number of synchronising CUDA operations the
        forward ran; None for inputs that are not on a CUDA device (a CPU
        runs each operation to its end: there is nothing to count).
    """
    if inputs.device.type != 'cuda':
        return None
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode('warn')
        with warnings.catch_warnings(record=True) as caught, \
                torch.inference_mode():
            warnings.simplefilter('always')
            model(inputs)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum('synchronizing' in str(w.message) for w in caught)
