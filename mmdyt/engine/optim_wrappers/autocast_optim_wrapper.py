"""AutocastOptimWrapper: mixed-precision training on any device, CPUs too."""
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from mmdyt.registry import register
from ..rate_meter import unwrap_model

#: Autocast dtypes that need no loss scaling (float32's exponent range).
UNSCALED_DTYPES = ('bfloat16', )


@register('OPTIM_WRAPPERS')
class AutocastOptimWrapper(OptimWrapper):
    """An OptimWrapper whose forward runs under ``torch.autocast`` in
    bfloat16, without loss scaling.

    mmengine's ``AmpOptimWrapper`` asserts a GPU (its loss scaler is CUDA's
    ``GradScaler``); bfloat16 has float32's exponent range, so it needs no
    loss scaling, and CPUs (and recent GPUs) run it. ``tools/train.py
    --amp`` picks this wrapper when no GPU is visible, mmengine's
    ``AmpOptimWrapper`` (float16 with dynamic loss scaling) otherwise.

    Parameters and optimizer state stay float32; DyTViT keeps its residual
    stream in float32 and scores tokens in float32 under autocast.

    Args:
        dtype (str | torch.dtype): The autocast dtype; only ``'bfloat16'``
            (float16 needs loss scaling: use ``AmpOptimWrapper``).
            Defaults to ``'bfloat16'``.
        device_type (str, optional): Device of the autocast context; by
            default the device of the model's parameters.
        **kwargs: The arguments of ``OptimWrapper`` (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).

    Examples:
        >>> optim_wrapper = dict(
        ...     type='AutocastOptimWrapper',
        ...     optimizer=dict(type='AdamW', lr=1e-3))
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 device_type: Optional[str] = None,
                 **kwargs):
        name = dtype if isinstance(dtype, str) else str(dtype).split('.')[-1]
        if name not in UNSCALED_DTYPES:
            raise ValueError(
                f'AutocastOptimWrapper runs {UNSCALED_DTYPES} without loss '
                f"scaling, got dtype {dtype!r}; for float16 use mmengine's "
                'AmpOptimWrapper (GPU, dynamic loss scaling)')
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, name)
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient accumulation context of ``OptimWrapper`` plus
        ``torch.autocast``."""
        module = unwrap_model(model)
        device_type = self.device_type or next(
            module.parameters()).device.type
        with super().optim_context(model), torch.autocast(
                device_type=device_type, dtype=self.cast_dtype):
            yield
