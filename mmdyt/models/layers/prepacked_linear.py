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
from typing import Iterable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules import module as module_state

from mmdyt.utils.torch_compat import (autocast_dtype, autocast_enabled,
                                      is_compiling, is_exporting)
from .row_planner import ROW_PLANNER, split_rows

#: The dtypes :class:`PrepackedLinear` keeps a low-precision copy for.
LOW_PRECISION = (torch.bfloat16, torch.float16)


class LowPrecisionCopy(NamedTuple):
    """A :class:`PrepackedLinear`'s low-precision weight and bias."""
    weight: Tensor
    bias: Optional[Tensor]
    #: Whether ``weight`` is packed for oneDNN's ``_linear_pointwise``.
    packed: bool
    dtype: torch.dtype


#: The linear layers of a ViT block that :func:`prepack_block` replaces:
#: the pre-trained attention and MLP projections (timm's names).
BLOCK_LINEARS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')


class PrepackedLinear(nn.Linear):
    """``nn.Linear`` that, in inference, multiplies by a copy of its weight
    prepared once: pre-packed for oneDNN in CPU float32, cast (and on the
    CPU pre-packed) in low precision.

    - **float32** (``float32=True``, CPU, no autocast): the weight packed
      for oneDNN's float32 kernel.
    - **low precision** (``low_precision=True``): under ``torch.autocast``,
      or for bfloat16 / float16 inputs and weights, the weight (and bias)
      cast to the compute dtype once. Autocast itself casts a frozen weight
      again at every call (its cast cache keeps only weights that require
      grad), which in bfloat16 costs about as much as the matmul saves. On
      a CPU with bfloat16 matrix units the bfloat16 copy is also packed for
      oneDNN, and the rows run in the number of pieces
      :data:`~mmdyt.models.layers.row_planner.ROW_PLANNER` measured fastest
      for this shape on this machine (:mod:`.row_planner`). The output has
      the compute dtype, as under autocast.

    A copy is made at the first call that can use it and kept until the
    weight changes (a ``load_state_dict``, an optimizer step, ``.to()``):
    it is keyed on the weight's storage and version. It is not a parameter
    or buffer, so state dicts, checkpoints and parameter counts are those
    of ``nn.Linear``; it costs one more copy of the weight in memory (half
    the size in bfloat16).

    The plain ``F.linear`` (and autocast's own casts) run when no copy
    applies: in training mode, when autograd needs the result (oneDNN's
    kernel has no backward), under ``torch.compile`` (which prepares
    weights itself), ``torch.export`` or a ``torch.jit`` trace (FLOPs
    counters, ONNX export), and in float32 on another device or for more
    than ``max_rows`` rows if that is set. Results agree with ``F.linear``
    to the rounding of the dtype they are computed in (the kernels sum in
    a different order), not bit for bit. A weight changed through ``.data``
    (which bypasses the version counter) is not noticed: call
    :meth:`forget_packed` after such a change.

    Args:
        in_features (int): Input channels.
        out_features (int): Output channels.
        bias (bool): Whether the layer has a bias. Defaults to True.
        max_rows (int, optional): Use the float32 pre-packed weight for
            inputs of at most this many rows (all dimensions but the last)
            only. Defaults to None: at any number of rows.
        float32 (bool): Pre-pack for CPU float32 inference. Defaults to
            True.
        low_precision (bool): Keep a low-precision copy for autocast and
            low-precision inputs. Defaults to True.
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
                 float32: bool = True,
                 low_precision: bool = True,
                 device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__(in_features, out_features, bias, device, dtype)
        if max_rows is not None and (not isinstance(max_rows, int)
                                     or max_rows < 0):
            raise ValueError('max_rows must be None or a non-negative int, '
                             f'got {max_rows!r}')
        self.max_rows = max_rows
        self.float32 = float32
        self.low_precision = low_precision
        self._packed: Optional[Tensor] = None
        self._packed_key: Optional[tuple] = None
        self._low: Optional[LowPrecisionCopy] = None
        self._low_key: Optional[tuple] = None

    @classmethod
    def from_linear(cls,
                    linear: nn.Linear,
                    max_rows: Optional[int] = None,
                    float32: bool = True,
                    low_precision: bool = True) -> 'PrepackedLinear':
        """A :class:`PrepackedLinear` sharing ``linear``'s parameters (the
        same ``Parameter`` objects: their ``requires_grad``, and what an
        optimizer holds, carry over)."""
        new = cls(linear.in_features, linear.out_features,
                  linear.bias is not None, max_rows, float32, low_precision,
                  device='meta')
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def _may_use_copies(self, x: Tensor) -> bool:
        """Whether this call may use a prepared copy of the weight at all
        (see the class docstring)."""
        if self.training:
            return False
        bias = self.bias
        if torch.is_grad_enabled() and (
                x.requires_grad or self.weight.requires_grad or
                (bias is not None and bias.requires_grad)):
            return False
        return not (is_compiling() or is_exporting()
                    or torch.jit.is_tracing())

    def packed_weight(self, x: Tensor) -> Optional[Tensor]:
        """The float32 pre-packed weight for input ``x``, or None where it
        does not apply (see the class docstring)."""
        weight = self.weight
        if not self.float32 or x.device.type != 'cpu' or \
                weight.device.type != 'cpu' or \
                x.dtype != torch.float32 or weight.dtype != torch.float32:
            return None
        if not self._may_use_copies(x) or autocast_enabled('cpu') or (
                self.max_rows is not None and
                x.numel() > self.max_rows * self.in_features):
            return None
        key = (weight.data_ptr(), weight._version)
        if self._packed_key != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(
                weight.detach(), None)
            self._packed_key = key
        return self._packed

    def compute_dtype(self, x: Tensor) -> Optional[torch.dtype]:
        """The low precision this call computes in (autocast's dtype, or
        that of low-precision inputs and weights), or None for none."""
        weight = self.weight
        if x.device != weight.device:
            return None
        dtype = autocast_dtype(x.device.type)
        if dtype is None:
            dtype = x.dtype
            if weight.dtype != dtype:
                return None
        elif x.dtype not in (torch.float32, dtype):
            return None
        return dtype if dtype in LOW_PRECISION else None

    def low_precision_weight(self, x: Tensor) -> Optional[LowPrecisionCopy]:
        """The low-precision copy for input ``x``, or None where it does
        not apply (see the class docstring)."""
        if not self.low_precision:
            return None
        dtype = self.compute_dtype(x)
        if dtype is None or not self._may_use_copies(x):
            return None
        weight, bias = self.weight, self.bias
        key = (weight.data_ptr(), weight._version, dtype,
               None if bias is None else (bias.data_ptr(), bias._version))
        if self._low_key != key:
            self._low = self._low_precision_copy(dtype)
            self._low_key = key
        return self._low

    def _low_precision_copy(self, dtype: torch.dtype) -> LowPrecisionCopy:
        weight = self.weight.detach().to(dtype)
        bias = None if self.bias is None else self.bias.detach().to(dtype)
        # packed only where oneDNN has bfloat16 kernels for this CPU (on
        # others its bfloat16 path is emulated: the plain cast is used)
        if weight.device.type == 'cpu' and dtype == torch.bfloat16 and \
                torch.ops.mkldnn._is_mkldnn_bf16_supported():
            weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            return LowPrecisionCopy(weight, bias, True, dtype)
        return LowPrecisionCopy(weight, bias, False, dtype)

    def forget_packed(self) -> None:
        """Drop the prepared copies; the next call prepares them again."""
        self._packed = self._packed_key = None
        self._low = self._low_key = None

    def forward(self, x: Tensor) -> Tensor:
        low = self.low_precision_weight(x)
        if low is not None:
            if not low.packed:
                return F.linear(x.to(low.dtype), low.weight, low.bias)
            return self._packed_low_precision(x.to(low.dtype), low.weight,
                                              low.bias)
        packed = self.packed_weight(x)
        if packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias,
                                                  'none', [], '')

    def _packed_low_precision(self,
                              x: Tensor,
                              weight: Tensor,
                              bias: Optional[Tensor],
                              post_op: tuple = ('none', '')) -> Tensor:
        """``x @ weight.T + bias`` with a packed low-precision weight (and
        oneDNN's ``post_op`` (name, algorithm) applied to it), the rows in
        the pieces :data:`ROW_PLANNER` chose."""
        flat = x.reshape(-1, self.in_features)
        name, algorithm = post_op

        def run(rows_in: Tensor, pieces: int) -> Tensor:
            if pieces == 1:
                return torch.ops.mkldnn._linear_pointwise(
                    rows_in, weight, bias, name, [], algorithm)
            return torch.cat([
                torch.ops.mkldnn._linear_pointwise(part, weight, bias, name,
                                                   [], algorithm)
                for part in rows_in.split(split_rows(len(rows_in), pieces))
            ])

        pieces = ROW_PLANNER.pieces(
            (self.in_features, self.out_features, x.dtype, bias is None,
             name),
            flat.shape[0],
            lambda rows, n: run(flat.new_zeros(rows, self.in_features), n))
        return run(flat, pieces).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, max_rows={self.max_rows}, '
                f'float32={self.float32}, '
                f'low_precision={self.low_precision}')

    def __getstate__(self) -> dict:
        # the packed copies are opaque oneDNN tensors: they cannot be copied
        # or pickled, and are rebuilt from the weight on the next call
        state = super().__getstate__()  # a copy of __dict__
        for name in ('_packed', '_packed_key', '_low', '_low_key'):
            state[name] = None
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
                  names: Optional[Iterable[str]] = BLOCK_LINEARS,
                  max_rows: Optional[int] = None,
                  float32: bool = True,
                  low_precision: bool = True) -> nn.Module:
    """Replace the ``nn.Linear`` layers ``names`` (dotted paths) of a block
    by :class:`PrepackedLinear` layers sharing their parameters (or set
    the options of those that already are).

    The block's state dict keeps its keys and values. Works on a
    :class:`~mmdyt.models.DyTBlock` and on a timm ViT ``Block`` alike.

    Args:
        block (nn.Module): The block, changed in place.
        names (Iterable[str], optional): Paths of its linear layers; None:
            every ``nn.Linear`` in it. A subclass of ``nn.Linear`` (such as
            mmcv's, which only adds a guard for empty inputs) becomes a
            plain :class:`PrepackedLinear`. Defaults to
            :data:`BLOCK_LINEARS`.
        max_rows (int, optional): See :class:`PrepackedLinear`.
            Defaults to None.
        float32 (bool): See :class:`PrepackedLinear`. Defaults to True.
        low_precision (bool): See :class:`PrepackedLinear`. Defaults to
            True.

    Returns:
        nn.Module: ``block``.
    """
    if names is None:
        names = [
            name for name, module in block.named_modules()
            if isinstance(module, nn.Linear)
        ]
    for name in names:
        parent_name, _, child = name.rpartition('.')
        parent = block.get_submodule(parent_name)
        linear = getattr(parent, child, None)
        if type(linear) is PrepackedLinear:
            linear.max_rows = max_rows
            linear.float32, linear.low_precision = float32, low_precision
            linear.forget_packed()
            continue
        if not isinstance(linear, nn.Linear):
            raise TypeError(f'{type(block).__name__}.{name} must be an '
                            f'nn.Linear to be pre-packed, got '
                            f'{type(linear).__name__}')
        setattr(parent, child,
                PrepackedLinear.from_linear(linear, max_rows, float32,
                                            low_precision))
    return block


def mlp_forward(mlp: nn.Module, x: Tensor) -> Tensor:
    """The forward of timm's ``Mlp`` (``fc1``, ``act``, ``drop1``, ``norm``,
    ``fc2``, ``drop2``) with ``fc1`` and a GELU fused into one oneDNN call
    (one pass over the hidden tokens less) where ``fc1``'s packed
    low-precision kernel runs; otherwise, and whenever a forward hook
    watches the MLP, ``fc1`` or its activation (hooks see the calls as
    without fusion), ``mlp(x)``.

    Args:
        mlp (nn.Module): A timm ``Mlp``.
        x (Tensor): Its input.
    """
    fc1, act = getattr(mlp, 'fc1', None), getattr(mlp, 'act', None)
    if mlp.training or type(fc1) is not PrepackedLinear or \
            type(act) is not nn.GELU or _hooked(mlp, fc1, act):
        return mlp(x)
    low = fc1.low_precision_weight(x)
    if low is None or not low.packed:
        return mlp(x)
    hidden = fc1._packed_low_precision(x.to(low.dtype), low.weight, low.bias,
                                       ('gelu', act.approximate))
    return mlp.drop2(mlp.fc2(mlp.norm(mlp.drop1(hidden))))


def _hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook (of one of ``modules``, or global) would see
    their calls."""
    if module_state._global_forward_hooks or \
            module_state._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)
