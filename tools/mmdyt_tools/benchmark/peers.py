"""The peers DyT is timed against in ``benchmark_backbone.py``, beside the
dense ViT.

- ``reference`` (:class:`ReferenceGatherDyT`): the same DyT model evaluated
  the straightforward way (``nonzero``, gather, MLP, write into a zero
  buffer by index, add).
- ``ideal`` (:class:`IdealSliceDyT`): DyT's FLOPs without DyT's
  bookkeeping. Each block's MLP runs on one contiguous slice of the batch's
  tokens, as many as DyT activates in that block; no scoring, no ``nonzero``,
  no gather, no scatter. The tokens of the slice are not the ones DyT picks
  (its output is not DyT's), but the work is the same. Its time is the floor
  of any token-skipping implementation of these FLOPs on this machine, with
  its fixed costs per matmul (above all reading every weight once per
  forward, whatever the number of tokens). ``ideal / DyT`` time then says how
  much of the gap to the FLOPs bound is DyT's implementation.
- ``dense_compiled`` and ``dyt_compiled``: the dense ViT and DyT under
  ``torch.compile`` (inductor with freezing by default), with
  :func:`compile_for_benchmark`.
- ``dense_prepacked`` and ``dyt_prepacked``: the dense ViT and DyT in eager
  mode with their blocks' linear layers pre-packed for oneDNN
  (:func:`prepacked_copy`, ``mmdyt.models.layers.prepacked_linear``).
- the bfloat16 peers, all under ``torch.autocast`` in bfloat16
  (:class:`AutocastPeer`), as ``tools/test.py --amp`` runs a model:
  ``dyt_bf16`` (DyT with its low-precision weight copies, as it runs by
  default), ``dense_bf16`` (the dense ViT with the same: packed bfloat16
  weights, row-aware matmuls, fused GELU; :func:`low_precision_copy`),
  ``ideal_bf16`` (the ideal slice, same kernels), ``dense_bf16_amp`` and
  ``dyt_bf16_amp`` (autocast alone, every frozen weight cast at every call:
  how both ran before; :func:`autocast_only_copy`) and, with compiled peers,
  ``dense_bf16_compiled`` and ``dyt_bf16_compiled``.
"""
import copy
import itertools
from typing import List, Sequence

import torch
import torch._inductor.config
import torch.nn as nn
from timm.layers import Mlp
from torch import Tensor

from mmdyt.models import DyTViT
from mmdyt.models.layers.prepacked_linear import (BLOCK_LINEARS,
                                                  PrepackedLinear,
                                                  mlp_forward, prepack_block)
from mmdyt.utils.torch_compat import (COMPILE_ONE_GRAPH, TORCH_FEATURES,
                                      torch_at_least)


class _MLPDispatchPeer(nn.Module):
    """A DyT model with MLP dispatch evaluated another way: the same patch
    and position embedding, attention, adapters and final norm as the DyT
    model it wraps (and its weights); a subclass computes the MLP part of
    each block (:meth:`mlp_part`).

    Args:
        dyt (DyTViT): A DyT model with ``dispatch='mlp'`` in eval mode.
    """
    #: What the peer is called in errors.
    peer = 'peer'

    def __init__(self, dyt: DyTViT):
        super().__init__()
        if dyt.dispatch != 'mlp':
            raise ValueError(f'the {self.peer} is written for MLP dispatch, '
                             f'got dispatch={dyt.dispatch!r}')
        self.dyt = dyt

    def mlp_part(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        """The output of block ``index`` from its attention's output
        ``x``: ``x`` plus its MLP and adapter updates."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        dyt = self.dyt
        if x.dim() == 5:  # (N, C, T, H, W) -> (N*T, C, H, W)
            x = x.transpose(1, 2).flatten(0, 1)
        grid = (x.shape[-2] // dyt.patch_size, x.shape[-1] // dyt.patch_size)
        x = dyt.add_pos_embed(dyt.patch_embed(x), grid)
        for index, block in enumerate(dyt.blocks):
            x = self.mlp_part(index, block, x + block.attn_update(x, grid))
        return dyt.norm(x) if dyt.norm is not None else x


class ReferenceGatherDyT(_MLPDispatchPeer):
    """DyT's evaluation written the straightforward way: the peer mmdyt's
    gathered path is measured against.

    Per block: the dispatcher's mask, then flatten the batch, ``nonzero``,
    gather the active tokens, run the MLP on them, write the results into a
    zero buffer by index and add it; the adapter on every token. It shares
    the weights (and so the masks) of the DyT model it wraps.
    """
    peer = 'reference gather'

    def mlp_part(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        prefix = block.num_prefix_tokens
        mask = block.mlp_dispatcher(x[:, prefix:])
        if prefix:  # the prefix tokens are always active
            mask = torch.cat([mask.new_ones(mask.shape[0], prefix), mask], 1)
        flat = x.flatten(0, 1)
        active = mask.flatten().nonzero().squeeze(1)
        update = torch.zeros_like(flat)
        update[active] = block.mlp_update(flat[active])
        return (flat + update).view_as(x) + block.mlp_adapter(x)


class IdealSliceDyT(_MLPDispatchPeer):
    """A DyT model whose MLPs run on fixed slices of tokens (see the module
    docstring): per block, as many tokens as DyT activates
    (:meth:`set_active`), the first ones of the flattened batch.
    """
    peer = 'ideal slice'

    def __init__(self, dyt: DyTViT):
        super().__init__(dyt)
        self.active: List[int] = []

    def set_active(self, masks: Sequence[Tensor]) -> None:
        """Take the number of tokens each block computes from DyT's masks of
        the benchmark input: the active patch tokens plus the prefix tokens.

        Args:
            masks (Sequence[Tensor]): DyT's (B, N - P) masks, one per block.
        """
        prefix = self.dyt.num_prefix_tokens
        self.active = [
            int(mask.count_nonzero()) + prefix * mask.shape[0]
            for mask in masks
        ]

    def forward(self, x: Tensor) -> Tensor:
        if len(self.active) != len(self.dyt.blocks):
            raise RuntimeError('call set_active with the masks of one DyT '
                               'forward first')
        return super().forward(x)

    def mlp_part(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        active = self.active[index]
        # as DyT's evaluation: the MLP reads the stream, then both updates
        # are added into it in place
        update = block.mlp_update(x.flatten(0, 1)[:active])
        out = block.mlp_adapter.add_to(x, x, inplace=True)
        out.flatten(0, 1)[:active].add_(update)
        return out


#: The low precisions of the autocast peers, by name.
AMP_DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16}


class AutocastPeer(nn.Module):
    """A model run under ``torch.autocast`` (bfloat16 by default) on the
    device of its input; the model's own weights, not a copy.

    Args:
        model (nn.Module): The model.
        dtype (torch.dtype): The autocast dtype. Defaults to
            ``torch.bfloat16``.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: Tensor):
        with torch.autocast(x.device.type, dtype=self.dtype):
            return self.model(x)


def compile_for_benchmark(model: nn.Module,
                          backend: str = 'inductor') -> nn.Module:
    """``torch.compile`` as one graph, with inductor's freezing.

    Freezing (inductor's CPU inference setting) folds the weights into the
    graph as constants and pre-packs the weights of matmuls whose shapes are
    static into MKL's layout. DyT's gathered evaluation compiles as one
    graph (``fullgraph=True``: its data-dependent sizes, from ``nonzero``,
    stay symbolic; ``tests/test_compile.py``), on a torch new enough for
    that (:data:`~mmdyt.utils.torch_compat.TORCH_FEATURES`); an older torch
    breaks the graph at each gather. Compiled code keeps the
    thread count it was compiled for: compile again after
    ``torch.set_num_threads`` (:func:`reset_compiled`).

    Args:
        model (nn.Module): The model to compile.
        backend (str): The ``torch.compile`` backend. Defaults to
            ``'inductor'``; another backend runs without freezing.
    """
    # process-wide: torch.compile(options=dict(freezing=True)) compiles
    # without freezing in torch 2.14 (measured: no gain over eager)
    torch._inductor.config.freezing = backend == 'inductor'
    one_graph = torch_at_least(TORCH_FEATURES[COMPILE_ONE_GRAPH])
    return torch.compile(model, backend=backend, fullgraph=one_graph)


def reset_compiled() -> None:
    """Forget every compiled graph (after a thread-count change)."""
    torch._dynamo.reset()


def _is_vit_block(module: nn.Module) -> bool:
    """Whether ``module`` has the linear layers of a ViT block
    (:data:`~mmdyt.models.layers.prepacked_linear.BLOCK_LINEARS`)."""
    try:
        return all(
            isinstance(module.get_submodule(name), nn.Linear)
            for name in BLOCK_LINEARS)
    except AttributeError:
        return False


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that shares its parameters and buffers (the same
    tensors): the dispatcher biases that ``set_activation_rate`` sets on
    ``model`` hold for the copy, and no weight is stored twice."""
    shared = itertools.chain(model.parameters(), model.buffers())
    return copy.deepcopy(model, memo={id(t): t for t in shared})


def prepacked_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the linear layers of each of its ViT blocks
    pre-packed (:func:`~mmdyt.models.layers.prepacked_linear.prepack_block`).

    The copy shares ``model``'s parameters and buffers
    (:func:`shared_copy`; only the packed copies are new). It works on the
    dense ViT and on DyT alike.

    Args:
        model (nn.Module): The model.

    Returns:
        nn.Module: The pre-packed copy.
    """
    prepacked = shared_copy(model)
    blocks = [m for m in prepacked.modules() if _is_vit_block(m)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no ViT block (with '
                         f'{", ".join(BLOCK_LINEARS)}) to pre-pack')
    for block in blocks:
        prepack_block(block)
    return prepacked


class FusedGeluMlp(nn.Module):
    """timm's ``Mlp`` run by :func:`~mmdyt.models.layers.prepacked_linear.
    mlp_forward` (``fc1`` and its GELU fused where they can be), as DyT's
    blocks run theirs: the dense peer gets the same kernels.

    Args:
        mlp (nn.Module): A timm ``Mlp`` (its layers, not a copy).
    """

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: Tensor) -> Tensor:
        return mlp_forward(self.mlp, x)


def low_precision_copy(model: nn.Module) -> nn.Module:
    """A copy of the dense ``model`` (sharing its parameters) whose every
    linear layer keeps a low-precision copy of its weight, packed for
    oneDNN on the CPU, with row-aware matmuls
    (:class:`~mmdyt.models.layers.prepacked_linear.PrepackedLinear`), and
    whose timm ``Mlp`` layers fuse ``fc1`` and the GELU: the dense model
    with everything DyT's low-precision path has.

    Args:
        model (nn.Module): The dense model.

    Returns:
        nn.Module: The copy.
    """
    prepared = shared_copy(model)
    prepack_block(prepared, names=None, float32=False)
    for module in list(prepared.modules()):
        if isinstance(getattr(module, 'mlp', None), Mlp):
            module.mlp = FusedGeluMlp(module.mlp)
    return prepared


def autocast_only_copy(model: nn.Module) -> nn.Module:
    """A copy of DyT (sharing its parameters) without its low-precision
    weight copies: what autocast alone does with it, every frozen weight
    cast again at every call (``DyTViT(low_precision_weights=False)``).

    Args:
        model (nn.Module): A DyT model.

    Returns:
        nn.Module: The copy.
    """
    plain = shared_copy(model)  # (a copy holds no prepared weights)
    for module in plain.modules():
        if isinstance(module, PrepackedLinear):
            module.low_precision = False
    return plain
