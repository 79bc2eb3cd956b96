"""Linear layers with weights pre-packed for oneDNN: faster CPU inference
of the frozen ViT.

A plain float32 matmul on the CPU (MKL's ``sgemm``, behind ``F.linear``)
reorders the weight into its blocked layout on every call. With few rows
(a batch of one image, or the half of its tokens that DyT sends through an
MLP) that reorder is a large share of the call. On a CPU where MKL does not
use its AVX-512 kernels but oneDNN does (the AMD EPYC of
docs/en/benchmarks/speed.md), oneDNN's kernel is also the faster one at
any number of rows. oneDNN can take a weight reordered once
(``torch.ops.mkldnn._reorder_linear_weight``) and multiply any number of
rows by it. ``torch.compile`` with inductor's freezing does the same for
the matmuls it compiles; :class:`PrepackedLinear` brings it to eager
inference, where DyT's token counts change from image to image.
"""
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdyt.utils.torch_compat import autocast_enabled, is_compiling

#: The linear layers of a ViT block that :func:`prepack_block` replaces:
#: the pre-trained attention and MLP projections (timm's names).
BLOCK_LINEARS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')


class PrepackedLinear(nn.Linear):
    """``nn.Linear`` that multiplies by a pre-packed copy of its weight in
    CPU float32 inference (eval mode).

    The copy is made at the first call that can use it and kept until the
    weight changes (a ``load_state_dict``, an optimizer step, ``.to()``):
    it is keyed on the weight's storage and version. It is not a parameter
    or buffer, so state dicts, checkpoints and parameter counts are those
    of ``nn.Linear``; it costs one more copy of the weight in memory.

    The plain ``F.linear`` runs when the pre-packed kernel does not apply:
    in training mode, on another device or dtype, when autograd needs the
    result (oneDNN's kernel has no backward), under autocast,
    ``torch.compile`` (which packs weights itself) or a ``torch.jit`` trace
    (FLOPs counters), and for more than ``max_rows`` rows if that is set.
    Results agree with ``F.linear`` to float32 rounding (the kernels sum in
    a different order), not bit for bit. A weight changed through ``.data``
    (which bypasses the version counter) is not noticed: call
    :meth:`forget_packed` after such a change.

    Args:
        in_features (int): Input channels.
        out_features (int): Output channels.
        bias (bool): Whether the layer has a bias. Defaults to True.
        max_rows (int, optional): Use the pre-packed weight for inputs of
            at most this many rows (all dimensions but the last) only.
            Defaults to None: at any number of rows (on the AMD CPU of
            docs/en/benchmarks/speed.md, section 3.7, packing makes ViT-B
            1.8-2.4x faster at batches 1 to 32).
        device (torch.device, optional): Device of the parameters.
            Defaults to None.
        dtype (torch.dtype, optional): dtype of the parameters.
            Defaults to None.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 max_rows: Optional[int] = None,
                 device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__(in_features, out_features, bias, device, dtype)
        if max_rows is not None and (not isinstance(max_rows, int)
                                     or max_rows < 0):
            raise ValueError('max_rows must be None or a non-negative int, '
                             f'got {max_rows!r}')
        self.max_rows = max_rows
        self._packed: Optional[Tensor] = None
        self._packed_key: Optional[tuple] = None

    @classmethod
    def from_linear(cls,
                    linear: nn.Linear,
                    max_rows: Optional[int] = None
                    ) -> 'PrepackedLinear':
        """A :class:`PrepackedLinear` sharing ``linear``'s parameters (the
        same ``Parameter`` objects: their ``requires_grad``, and what an
        optimizer holds, carry over)."""
        new = cls(linear.in_features, linear.out_features,
                  linear.bias is not None, max_rows, device='meta')
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def packed_weight(self, x: Tensor) -> Optional[Tensor]:
        """The pre-packed weight for input ``x``, or None where the plain
        kernel must run (see the class docstring)."""
        weight = self.weight
        if self.training or x.device.type != 'cpu' or \
                weight.device.type != 'cpu' or \
                x.dtype != torch.float32 or weight.dtype != torch.float32:
            return None
        bias = self.bias
        if torch.is_grad_enabled() and (
                x.requires_grad or weight.requires_grad or
                (bias is not None and bias.requires_grad)):
            return None
        if is_compiling() or torch.jit.is_tracing() or \
                autocast_enabled('cpu') or (
                    self.max_rows is not None and
                    x.numel() > self.max_rows * self.in_features):
            return None
        key = (weight.data_ptr(), weight._version)
        if self._packed_key != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(
                weight.detach(), None)
            self._packed_key = key
        return self._packed

    def forget_packed(self) -> None:
        """Drop the packed copy; the next call packs the weight again."""
        self._packed = self._packed_key = None

    def forward(self, x: Tensor) -> Tensor:
        packed = self.packed_weight(x)
        if packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias,
                                                  'none', [], '')

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, max_rows={self.max_rows}'

    def __getstate__(self) -> dict:
        # the packed copy is an opaque oneDNN tensor: it cannot be copied or
        # pickled, and is rebuilt from the weight on the next call
        state = super().__getstate__()  # a copy of __dict__
        state['_packed'] = state['_packed_key'] = None
        return state


def add_linear_(out: Tensor, x: Tensor, linear: nn.Linear) -> Tensor:
    """``out + linear(x)`` for 2-D ``out`` (M, out_features) and ``x``
    (M, in_features), without a buffer for ``linear(x)``.

    A plain layer's matmul is an ``addmm_`` into ``out`` itself. A
    :class:`PrepackedLinear` that can use its packed weight adds in the
    same oneDNN call (into a new tensor: that kernel has no in-place form).

    Args:
        out (Tensor): A tensor the caller owns and no autograd graph needs;
            it may be updated in place.
        x (Tensor): The layer's input.
        linear (nn.Linear): The layer.

    Returns:
        Tensor: ``out + linear(x)``: ``out`` itself or a new tensor.
    """
    if isinstance(linear, PrepackedLinear):
        packed = linear.packed_weight(x)
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(
                x, out, packed, linear.bias, 'add')
    out = out.addmm_(x, linear.weight.t())
    return out if linear.bias is None else out.add_(linear.bias)


def prepack_block(block: nn.Module,
                  names: Iterable[str] = BLOCK_LINEARS,
                  max_rows: Optional[int] = None) -> nn.Module:
    """Replace the ``nn.Linear`` layers ``names`` (dotted paths) of a ViT
    block by :class:`PrepackedLinear` layers sharing their parameters.

    The block's state dict keeps its keys and values. Works on a
    :class:`~mmdyt.models.DyTBlock` and on a timm ViT ``Block`` alike.

    Args:
        block (nn.Module): The block, changed in place.
        names (Iterable[str]): Paths of its linear layers. Defaults to
            :data:`BLOCK_LINEARS`.
        max_rows (int, optional): See :class:`PrepackedLinear`.
            Defaults to None.

    Returns:
        nn.Module: ``block``.
    """
    for name in names:
        parent_name, _, child = name.rpartition('.')
        parent = block.get_submodule(parent_name)
        linear = getattr(parent, child, None)
        if type(linear) is PrepackedLinear:
            continue
        if type(linear) is not nn.Linear:
            raise TypeError(f'{type(block).__name__}.{name} must be an '
                            f'nn.Linear to be pre-packed, got '
                            f'{type(linear).__name__}')
        setattr(parent, child, PrepackedLinear.from_linear(linear, max_rows))
    return block
