"""Inference speed of DyT against the dense ViT, in one process.

Three backbones share the same pre-trained weights and run on the same
inputs (:func:`build_benchmark_models`):

- ``dense``: timm's ``VisionTransformer`` (``forward_features``), i.e. the
  plain pre-trained ViT one would deploy without DyT, with timm's fused
  ``scaled_dot_product_attention``. It is not a DyT model run with
  ``complete=True``: that would include the adapters (it is the
  adapter-only cost) and DyT's bookkeeping, and would flatter DyT.
- ``adapter``: :class:`DyTViT` with ``dispatch=None``: the adapter-only
  (AdaptFormer-style) baseline, every token through every MLP.
- ``dyt``: :class:`DyTViT` with MLP dispatch in eval mode: the gathered
  path, where skipped tokens do not enter the MLP.
- ``reference``: the same DyT model evaluated the straightforward way
  (:class:`ReferenceGatherDyT`: ``nonzero``, gather, MLP, write into a zero
  buffer by index, add): the peer DyT's gathered path must beat.
- ``dense_again``: the dense model timed a second time, the noise control.
- ``ideal``: DyT's FLOPs without its bookkeeping, the floor of any
  token-skipping implementation on this machine
  (``benchmark_peers.IdealSliceDyT``).
- with ``compile=True``, ``dense_compiled`` and ``dyt_compiled``: the dense
  model and DyT under ``torch.compile`` (``benchmark_peers``).
- with ``prepack=True``, ``dense_prepacked`` and ``dyt_prepacked``: the
  dense model and DyT in eager mode with pre-packed weights
  (``benchmark_peers.prepacked_copy``).
- with ``bf16=True``, ``dense_bf16`` and ``dyt_bf16``: the dense model and
  DyT under ``torch.autocast`` in bfloat16 (``benchmark_peers.AutocastPeer``).

``dyt``, ``reference`` and ``adapter`` share their adapter weights too.
The weights are random (nothing is downloaded): speed depends on how many
tokens are
computed, not on which. Random dispatchers activate about half of the
tokens; :func:`set_activation_rate` shifts each dispatcher's bias so that a
target fraction of the tokens of the benchmark input is active.

Timing (:func:`time_interleaved`) runs under ``torch.inference_mode`` with
warm-up, then interleaves the models in every repeat (in a rotating order)
so that load changes on a shared machine hit all of them alike, and reports
median milliseconds per forward. Every ratio comes with a 95% bootstrap
interval over the repeats (:func:`bootstrap_ratio`): with enough repeats it
can tell a 2% difference from noise, and the noise control says how large
the noise is.
"""
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from mmdyt.models import DyTViT
from mmdyt.models.layers.dispatcher import mean_rate
from mmdyt.models.flops import dyt_vit_flops
from benchmark_peers import (AutocastPeer, IdealSliceDyT, ReferenceGatherDyT,
                             compile_for_benchmark, prepacked_copy)

#: Named benchmark settings: ViT-B/16 for image classification, the
#: segmentation backbone and 8-frame clips.
PRESETS = {
    'vit-b-224': dict(arch='base', img_size=224, num_frames=None,
                      batches=(1, 8, 32)),
    'vit-b-512': dict(arch='base', img_size=512, num_frames=None,
                      batches=(1, 2)),
    'vit-b-video': dict(arch='base', img_size=224, num_frames=8,
                        batches=(1, 2)),
    # the detection backbone: ViTDet-B at 1024 (windows of 14, global blocks
    # 2, 5, 8, 11, decomposed relative positions, no cls token); the dense
    # peer is timm's SAM ViT-B blocks, the same design
    'vitdet-b-1024': dict(arch='base', img_size=1024, num_frames=None,
                          batches=(1, ), vitdet=True),
    # the Swin-B of the ADE20K recipe (window 12) at 512; the dense peer is
    # mmseg's SwinTransformer (``benchmark_swin``)
    'swin-b-512': dict(arch='swin-b', img_size=512, num_frames=None,
                       batches=(1, 8), swin=True),
}

#: DyTViT options of ViTDet's backbone (the ``vitdet`` presets).
VITDET_OPTIONS = dict(with_cls_token=False, window_size=14,
                      global_attn_indexes=(2, 5, 8, 11), use_rel_pos=True)

#: Clocks :func:`time_interleaved` can use: wall time, or the CPU time of
#: this process (all its threads), which other processes on a shared machine
#: disturb less (use it with ``torch.set_num_threads(1)``).
TIMERS = {'wall': time.perf_counter, 'cpu': time.process_time}

#: Names of the benchmarked models, in table order. ``dense_again`` is the
#: dense model timed a second time: the noise control (its ratio to
#: ``dense`` should be 1 within the interval).
MODEL_NAMES = ('dense', 'dense_again', 'adapter', 'dyt', 'reference',
               'ideal')


class DenseViT(nn.Module):
    """The plain pre-trained ViT: timm's ``forward_features``, videos folded
    frame by frame into the batch as :class:`DyTViT` does.

    Args:
        vit (nn.Module): A timm ``VisionTransformer``.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # (N, C, T, H, W) -> (N*T, C, H, W)
            x = x.transpose(1, 2).flatten(0, 1)
        return self.vit.forward_features(x)


class DenseSAM(nn.Module):
    """The plain ViTDet backbone: the patch embedding, position embedding
    and blocks of timm's SAM ViT (its neck left out), tokens out as
    ``(N, H*W, C)``.

    Args:
        sam (nn.Module): A timm ``VisionTransformerSAM``.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, x: Tensor) -> Tensor:
        x = self.sam.blocks(self.sam.patch_embed(x) + self.sam.pos_embed)
        return x.flatten(1, 2)


@dataclass
class BenchmarkModels:
    """The benchmarked backbones (eval mode, same weights)."""
    dense: nn.Module
    adapter: DyTViT
    dyt: DyTViT
    reference: ReferenceGatherDyT
    ideal: IdealSliceDyT
    compiled: Dict[str, nn.Module] = field(default_factory=dict)
    prepacked: Dict[str, nn.Module] = field(default_factory=dict)
    bf16: Dict[str, nn.Module] = field(default_factory=dict)

    @property
    def dense_again(self) -> DenseViT:
        """The dense model, timed a second time (noise control)."""
        return self.dense

    def compile(self, backend: str = 'inductor') -> None:
        """(Re)compile the dense model and DyT: call it again after
        ``torch.set_num_threads``, after ``benchmark_peers.reset_compiled``.

        Args:
            backend (str): The ``torch.compile`` backend.
                Defaults to ``'inductor'``.
        """
        self.compiled = dict(
            dense_compiled=compile_for_benchmark(self.dense, backend),
            dyt_compiled=compile_for_benchmark(self.dyt, backend))

    def prepack(self) -> None:
        """Add the dense model and DyT with pre-packed weights (sharing
        their parameters, ``benchmark_peers.prepacked_copy``)."""
        self.prepacked = dict(dense_prepacked=prepacked_copy(self.dense),
                              dyt_prepacked=prepacked_copy(self.dyt))

    def add_bf16(self) -> None:
        """Add the dense model and DyT under bfloat16 autocast."""
        self.bf16 = dict(dense_bf16=AutocastPeer(self.dense),
                         dyt_bf16=AutocastPeer(self.dyt))

    def peers(self) -> Dict[str, nn.Module]:
        """The compiled, pre-packed and bfloat16 peers, by name."""
        return dict(self.compiled, **self.prepacked, **self.bf16)

    def as_dict(self) -> Dict[str, nn.Module]:
        return dict({name: getattr(self, name)
                     for name in MODEL_NAMES}, **self.peers())


def build_benchmark_models(arch: str = 'base',
                           img_size: int = 224,
                           patch_size: int = 16,
                           adapter_cfg: Optional[dict] = None,
                           seed: int = 0,
                           vitdet: bool = False,
                           swin: bool = False) -> BenchmarkModels:
    """Build the dense ViT, the adapter-only and the DyT backbone.

    Args:
        arch (str | dict): A :attr:`DyTViT.arch_zoo` name or arch dict.
            Defaults to ``'base'``.
        img_size (int): Input size. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        adapter_cfg (dict, optional): Adapter config of the DyT models.
            Defaults to None (``Adapter``, bottleneck 64).
        seed (int): Seed of the random weights. Defaults to 0.
        vitdet (bool): ViTDet's backbone (:data:`VITDET_OPTIONS`, no final
            norm), with timm's SAM ViT as the dense model. Defaults to False.
        swin (bool): Swin-B instead of a ViT (``benchmark_swin``; ``arch``,
            ``patch_size`` and ``adapter_cfg`` are not used). Defaults to
            False.
    """
    if swin:
        from benchmark_swin import build_swin_models
        return build_swin_models(img_size, seed)
    torch.manual_seed(seed)
    common = dict(
        arch=arch,
        img_size=img_size,
        patch_size=patch_size,
        out_type='raw',
        final_norm=not vitdet,
        adapter_cfg=adapter_cfg,
        **(VITDET_OPTIONS if vitdet else {}))
    dyt = DyTViT(dispatch='mlp', **common).eval()
    adapter = DyTViT(dispatch=None, **common).eval()
    if vitdet:
        dense = _dense_sam(dyt)
    else:
        dense = _dense_vit(dyt)
    adapter.load_state_dict(dyt.state_dict(), strict=False)
    return BenchmarkModels(dense, adapter, dyt,
                           ReferenceGatherDyT(dyt).eval(),
                           IdealSliceDyT(dyt).eval())


def _check_shared(missing: List[str], unexpected: List[str]) -> None:
    if unexpected or any('_adapter.' not in k and '_dispatcher.' not in k
                         for k in missing):
        raise RuntimeError(f'timm ViT and DyTViT weights differ: missing '
                           f'{missing[:5]}, unexpected {unexpected[:5]}')


def _dense_vit(dyt: DyTViT) -> DenseViT:
    """A timm ViT whose weights ``dyt`` loads (DyTViT uses timm's
    parameter names: the same pre-trained weights in every model)."""
    from timm.models.vision_transformer import VisionTransformer
    settings = dyt.arch_settings
    vit = VisionTransformer(
        img_size=dyt.img_size,
        patch_size=dyt.patch_size,
        embed_dim=settings['embed_dims'],
        depth=settings['num_layers'],
        num_heads=settings['num_heads'],
        mlp_ratio=settings['feedforward_channels'] / settings['embed_dims'],
        qkv_bias=True,
        num_classes=0,
        global_pool='').eval()
    _check_shared(*dyt.load_state_dict(vit.state_dict(), strict=False))
    return DenseViT(vit)


def _dense_sam(dyt: DyTViT) -> DenseSAM:
    """timm's SAM ViT with ``dyt``'s ViTDet blocks and weights (its
    LayerNorms at DyTViT's eps; its neck is not run)."""
    from timm.models.vision_transformer_sam import VisionTransformerSAM
    settings = dyt.arch_settings
    sam = VisionTransformerSAM(
        img_size=dyt.img_size,
        patch_size=dyt.patch_size,
        embed_dim=settings['embed_dims'],
        depth=settings['num_layers'],
        num_heads=settings['num_heads'],
        mlp_ratio=settings['feedforward_channels'] / settings['embed_dims'],
        use_rel_pos=True,
        window_size=dyt.window_size,
        global_attn_indexes=tuple(
            i for i, b in enumerate(dyt.blocks) if not b.attn.window_size),
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_classes=0).eval()
    state = {k: v for k, v in sam.state_dict().items()
             if k.startswith(('blocks.', 'patch_embed.'))}
    state['pos_embed'] = sam.pos_embed.flatten(1, 2)
    _check_shared(*dyt.load_state_dict(state, strict=False))
    return DenseSAM(sam)


def bootstrap_ratio(numerator: Sequence[float],
                    denominator: Sequence[float],
                    resamples: int = 2000,
                    level: float = 0.95,
                    seed: int = 0) -> Tuple[float, float, float]:
    """``median(numerator) / median(denominator)`` of paired rounds, with a
    bootstrap confidence interval over the rounds.

    Round ``i`` timed both models (in a rotated order), so rounds are
    resampled as pairs: a slow phase of the machine that hit both stays
    paired.

    Args:
        numerator (Sequence[float]): Per-round times of one model.
        denominator (Sequence[float]): The other model's, same rounds.
        resamples (int): Bootstrap resamples. Defaults to 2000.
        level (float): Confidence level. Defaults to 0.95.
        seed (int): Seed of the resampling. Defaults to 0.

    Returns:
        tuple[float, float, float]: The ratio and the interval's bounds.
    """
    num = torch.tensor(numerator, dtype=torch.float64)
    den = torch.tensor(denominator, dtype=torch.float64)
    if num.shape != den.shape or num.numel() == 0:
        raise ValueError('need the same, non-zero number of rounds')
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, num.numel(), (resamples, num.numel()),
                          generator=generator)
    ratios = num[picks].median(dim=1).values / den[picks].median(
        dim=1).values
    tail = (1 - level) / 2
    low, high = torch.quantile(ratios, torch.tensor([tail, 1 - tail],
                                                    dtype=torch.float64))
    return (statistics.median(numerator) / statistics.median(denominator),
            float(low), float(high))


def _bias_for_rate(scores: Tensor, rate: float) -> float:
    """Bias that makes a fraction ``rate`` of ``scores + bias`` positive."""
    ordered = scores.flatten().double().sort().values
    count = ordered.numel()
    active = int(round(rate * count))
    if active >= count:
        return float(1 - ordered[0])
    if active <= 0:
        return float(-1 - ordered[-1])
    # the midpoint between the last skipped and the first active score
    return float(-(ordered[count - active - 1] + ordered[count - active]) / 2)


def ratio_fields(times: Dict[str, List[float]],
                 *specs: Tuple[str, str, str],
                 seed: int = 0) -> dict:
    """Row fields of time ratios: for each ``(key, num, den)`` of ``specs``,
    ``key``, the ratio of the medians ``times[num] / times[den]``, and
    ``key_ci``, its 95% bootstrap interval (:func:`bootstrap_ratio`), rounded
    to 4 digits.

    Args:
        times (dict[str, list[float]]): Per-round times by model name.
        *specs (tuple[str, str, str]): The field name, the model in the
            numerator and the one in the denominator, per ratio.
        seed (int): Seed of the resampling. Defaults to 0.
    """
    fields = {}
    for key, num, den in specs:
        value, low, high = bootstrap_ratio(times[num], times[den], seed=seed)
        fields[key] = round(value, 4)
        fields[f'{key}_ci'] = [round(low, 4), round(high, 4)]
    return fields


def _peer_fields(times: Dict[str, List[float]], kind: str, gain: str,
                 bound: float, seed: int = 0) -> dict:
    """Row fields of the peers ``dense_<kind>`` and ``dyt_<kind>`` (the
    dense model and DyT compiled, pre-packed or under bfloat16 autocast):
    ``<kind>_speedup`` (peer dense / peer DyT time) and
    ``<kind>_efficiency`` (over the FLOPs ``bound``), ``dense_<gain>_gain``
    and ``dyt_<gain>_gain`` (eager / peer time of each) and
    ``dyt_<kind>_vs_dense`` (eager dense / peer DyT time), each with its
    interval.
    """
    dense, dyt = f'dense_{kind}', f'dyt_{kind}'
    fields = ratio_fields(times, (f'{kind}_speedup', dense, dyt),
                          (f'dense_{gain}_gain', 'dense', dense),
                          (f'dyt_{gain}_gain', 'dyt', dyt),
                          (f'dyt_{kind}_vs_dense', 'dense', dyt),
                          seed=seed)
    fields.update(_efficiency(fields, f'{kind}_speedup',
                              f'{kind}_efficiency', bound))
    return fields


def _efficiency(row: dict, speedup: str, key: str, bound: float) -> dict:
    """``key`` and ``key_ci``: the speedup field of ``row`` over the FLOPs
    bound."""
    return {
        key: round(row[speedup] / bound, 4),
        f'{key}_ci': [round(c / bound, 4) for c in row[f'{speedup}_ci']],
    }


@torch.no_grad()
def set_activation_rate(model: DyTViT, inputs: Tensor, rate: float) -> None:
    """Shift every dispatcher's bias so that ``rate`` of the tokens of
    ``inputs`` are active.

    One forward: a pre-hook on each dispatcher sets its bias from the scores
    of the tokens it receives, which already reflect the biases set in the
    blocks before it. The model then activates (up to ties) a fraction
    ``rate`` of the patch tokens of ``inputs`` at every dispatcher; other
    inputs of the same distribution get about the same rate. Only the
    biases change, so this is a benchmark device, not a training method.

    Args:
        model (DyTViT): The model, in eval mode.
        inputs (Tensor): The calibration inputs.
        rate (float): Target activation rate in [0, 1].
    """
    if not 0 <= rate <= 1:
        raise ValueError(f'rate must be in [0, 1], got {rate}')
    if model.training:
        raise ValueError('set_activation_rate needs the model in eval mode')
    # in evaluation a token dispatcher scores every token, the prefix too
    # (whose decisions the block overrides): count the others only
    prefix = 0 if model.dispatch == 'layer' else model.num_prefix_tokens

    def hook(dispatcher, args):
        scores = dispatcher.linear(args[0][:, prefix:]).squeeze(-1) - \
            dispatcher.linear.bias
        bias = _bias_for_rate(scores, rate) + dispatcher.logit_threshold
        dispatcher.linear.bias.fill_(bias)

    handles = [
        d.register_forward_pre_hook(hook) for d in model.dispatchers()
    ]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def time_interleaved(models: Dict[str, Callable[[Tensor], object]],
                     inputs: Tensor,
                     warmup: int = 2,
                     repeats: int = 10,
                     timer: str = 'wall') -> Dict[str, List[float]]:
    """Time forwards of several models on the same inputs.

    Each repeat runs every model once, in an order rotated by one model per
    repeat, so that slow phases of a shared machine hit all models alike.

    Args:
        models (dict[str, Callable]): Forward functions by name.
        inputs (Tensor): The batch every model runs on.
        warmup (int): Untimed forwards of each model first. Defaults to 2.
        repeats (int): Timed forwards of each model. Defaults to 10.
        timer (str): A clock of :data:`TIMERS`. Defaults to ``'wall'``.

    Returns:
        dict[str, list[float]]: The times (ms) of each model's forwards.
    """
    if timer not in TIMERS:
        raise ValueError(f'timer must be one of {sorted(TIMERS)}, got '
                         f'{timer!r}')
    clock = TIMERS[timer]
    names = list(models)
    times: Dict[str, List[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                models[name](inputs)
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                start = clock()
                models[name](inputs)
                times[name].append((clock() - start) * 1e3)
    return times


#: How far a peer's output may be from its eager model's: for compiled and
#: pre-packed kernels float32 rounding of the largest error over the largest
#: output; for bfloat16 autocast the relative (Frobenius) error of the whole
#: output of a model that skips nothing.
PEER_TOLERANCE = {'compiled': 1e-3, 'prepacked': 1e-3, 'bf16': 0.05}

#: DyT under bfloat16 autocast: tokens whose score lies at the threshold may
#: flip under bfloat16's rounding of the stream the dispatchers read, and one
#: token's MLP update in or out is a large change at that token. So DyT is
#: checked on its decisions instead: the share that agrees with float32's
#: and the activation rate.
BF16_DECISIONS = dict(agree=0.97, rate=0.02)


def _check_peers(models: BenchmarkModels, inputs: Tensor) -> None:
    """Raise if a compiled, pre-packed or bfloat16 model's output differs
    from its eager model's on the benchmark input beyond its kind's
    :data:`PEER_TOLERANCE` (none may change what is timed)."""
    with torch.inference_mode():
        for peer, model in models.peers().items():
            name, _, how = peer.partition('_')
            eager = getattr(models, name)
            if how == 'bf16' and getattr(eager, 'dispatch', None):
                _check_bf16_decisions(eager, inputs)
                continue
            want, got = eager(inputs), model(inputs)
            want, got = (torch.stack(list(v)).float()
                         if isinstance(v, tuple) else v.float()
                         for v in (want, got))
            if how == 'bf16':
                err = float((want - got).norm() / want.norm())
                scale = 1.0
            else:
                err = float((want - got).abs().max())
                scale = float(want.abs().max())
            if err > PEER_TOLERANCE[how] * scale:
                raise RuntimeError(f'{how} changed the {name} model\'s '
                                   f'output (error {err:.3g})')


def _check_bf16_decisions(model: DyTViT, inputs: Tensor) -> None:
    """Raise if DyT's dispatch decisions under bfloat16 autocast differ
    from float32's beyond :data:`BF16_DECISIONS`."""
    _, want = model.forward_with_masks(inputs)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
        _, got = model.forward_with_masks(inputs)
    want, got = (torch.stack([m.float() for m in v]) for v in (want, got))
    agree = float((want == got).float().mean())
    rate_change = abs(float(want.mean() - got.mean()))
    if agree < BF16_DECISIONS['agree'] or \
            rate_change > BF16_DECISIONS['rate']:
        raise RuntimeError(
            f'bf16 changed the dyt model\'s decisions: {agree:.2%} agree '
            f'with float32\'s, the rate moved by {rate_change:.3f}')


def benchmark_setting(models: BenchmarkModels,
                      setting: str,
                      batch: int,
                      img_size: int,
                      num_frames: Optional[int] = None,
                      rate: Optional[float] = None,
                      warmup: int = 2,
                      repeats: int = 10,
                      timer: str = 'wall',
                      seed: int = 0) -> dict:
    """Time the models on one batch and compare with their FLOPs.

    Args:
        models (BenchmarkModels): The models.
        setting (str): Name of the setting, for the row.
        batch (int): Batch size (images, or clips).
        img_size (int): Input height and width.
        num_frames (int, optional): Frames per clip; None for images.
        rate (float, optional): Target activation rate
            (:func:`set_activation_rate`); None keeps the dispatchers as
            they are. Defaults to None.
        warmup (int): Untimed forwards per model. Defaults to 2.
        repeats (int): Timed forwards per model. Defaults to 10.
        timer (str): ``'wall'`` or ``'cpu'`` (:data:`TIMERS`).
            Defaults to ``'wall'``.
        seed (int): Seed of the random inputs. Defaults to 0.

    Returns:
        dict: ``setting, batch, rate`` (measured mean rate of DyT),
        ``<model>_ms`` (medians), ``speedup`` (dense / DyT time),
        ``flops_speedup`` (dense / DyT FLOPs at the measured rates),
        ``efficiency`` (their ratio), ``reference_speedup`` (dense /
        reference-gather time), ``dyt_vs_reference`` (reference / DyT
        time), ``adapter_vs_dense`` (adapter-only / dense time),
        ``noise_control`` (dense timed twice), each ratio with a ``_ci``
        interval where it matters, ``dyt_overhead`` (DyT over adapter-only
        time, minus 1), ``ideal_speedup`` (dense / ideal-slice time),
        ``dyt_vs_ideal`` (ideal-slice / DyT time) and the GFLOPs of one
        sample per model. With compiled peers also ``compiled_speedup``
        (compiled dense / compiled DyT time), ``compiled_efficiency``,
        ``dense_compile_gain`` and ``dyt_compile_gain`` (eager / compiled
        time of each) and ``dyt_compiled_vs_dense`` (eager dense / compiled
        DyT time). With pre-packed peers likewise ``prepacked_speedup``,
        ``prepacked_efficiency``, ``dense_prepack_gain``,
        ``dyt_prepack_gain`` and ``dyt_prepacked_vs_dense``; with bfloat16
        peers ``bf16_speedup``, ``bf16_efficiency``, ``dense_bf16_gain``,
        ``dyt_bf16_gain`` and ``dyt_bf16_vs_dense``.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, img_size, img_size) if num_frames is None else \
        (batch, 3, num_frames, img_size, img_size)
    inputs = torch.randn(*shape, generator=generator)
    dyt = models.dyt
    if rate is not None:
        set_activation_rate(dyt, inputs, rate)
    with torch.inference_mode():
        masks = dyt.forward_with_masks(inputs)[1]
    site_rates = [float(m.float().mean()) for m in masks]
    models.ideal.set_active(masks)
    _check_peers(models, inputs)
    measured = float(mean_rate(masks))

    size = (img_size, img_size)
    frames = num_frames or 1
    gflops = {
        'dense': dyt_vit_flops(dyt, size, with_dyt=False).total,
        'adapter': dyt_vit_flops(models.adapter, size).total,
        'dyt': dyt_vit_flops(dyt, size, site_rates).total,
    }
    gflops = {k: v * frames / 1e9 for k, v in gflops.items()}

    times = time_interleaved(models.as_dict(), inputs, warmup, repeats,
                             timer)
    ms = {
        name: statistics.median(values)
        for name, values in times.items()
    }
    flops_speedup = gflops['dense'] / gflops['dyt']

    row = dict(
        setting=setting,
        batch=batch,
        rate=round(measured, 4),
        **{f'{name}_ms': round(value, 2)
           for name, value in ms.items()},
        **ratio_fields(times, ('speedup', 'dense', 'dyt'),
                       ('reference_speedup', 'dense', 'reference'),
                       ('dyt_vs_reference', 'reference', 'dyt'),
                       ('adapter_vs_dense', 'adapter', 'dense'),
                       ('noise_control', 'dense_again', 'dense'),
                       ('ideal_speedup', 'dense', 'ideal'),
                       ('dyt_vs_ideal', 'ideal', 'dyt'),
                       seed=seed),
        flops_speedup=round(flops_speedup, 4),
        dyt_overhead=round(ms['dyt'] / ms['adapter'] - 1, 4),
        dense_gflops=round(gflops['dense'], 6),
        adapter_gflops=round(gflops['adapter'], 6),
        dyt_gflops=round(gflops['dyt'], 6),
        threads=torch.get_num_threads(),
        repeats=repeats,
        timer=timer)
    row.update(_efficiency(row, 'speedup', 'efficiency', flops_speedup))
    for kind, gain, peers in (('compiled', 'compile', models.compiled),
                              ('prepacked', 'prepack', models.prepacked),
                              ('bf16', 'bf16', models.bf16)):
        if peers:
            row.update(
                _peer_fields(times, kind, gain, flops_speedup, seed=seed))
    print_log(
        f'{setting} batch {batch}, {row["threads"]} threads: rate '
        f'{measured:.3f}, speedup {row["speedup"]:.3f} '
        f'{row["speedup_ci"]} (FLOPs bound {flops_speedup:.3f}), vs the '
        f'reference gather {row["dyt_vs_reference"]:.3f}',
        logger='current')
    return row


#: Columns of :func:`format_markdown`: (header, row key, interval key).
TABLE_COLUMNS = (
    ('setting', 'setting', None),
    ('threads', 'threads', None),
    ('batch', 'batch', None),
    ('rate', 'rate', None),
    ('DyT speedup', 'speedup', 'speedup_ci'),
    ('FLOPs bound', 'flops_speedup', None),
    ('efficiency', 'efficiency', 'efficiency_ci'),
    ('reference gather speedup', 'reference_speedup', None),
    ('DyT vs reference', 'dyt_vs_reference', 'dyt_vs_reference_ci'),
    ('adapter-only / dense time', 'adapter_vs_dense', 'adapter_vs_dense_ci'),
    ('dense / dense (noise)', 'noise_control', 'noise_control_ci'),
    ('ideal-slice speedup', 'ideal_speedup', None),
    ('DyT vs ideal slice', 'dyt_vs_ideal', 'dyt_vs_ideal_ci'),
)


def _peer_columns(kind: str, gain: str, label: str, doing: str,
                  gain_intervals: bool = True) -> tuple:
    """Columns of the table of the peers of :func:`_peer_fields`
    (``kind``, ``gain``), headed ``label`` (e.g. ``'compiled'``) and
    ``doing`` (e.g. ``'compiling'``)."""

    def interval(key: str) -> str:
        return f'{key}_ci' if gain_intervals else None

    return (
        ('setting', 'setting', None),
        ('threads', 'threads', None),
        ('batch', 'batch', None),
        (f'{label} DyT speedup', f'{kind}_speedup', f'{kind}_speedup_ci'),
        ('FLOPs bound', 'flops_speedup', None),
        (f'{label} efficiency', f'{kind}_efficiency',
         f'{kind}_efficiency_ci'),
        (f'{doing}: dense gain', f'dense_{gain}_gain',
         interval(f'dense_{gain}_gain')),
        (f'{doing}: DyT gain', f'dyt_{gain}_gain',
         interval(f'dyt_{gain}_gain')),
        (f'{label} DyT vs eager dense', f'dyt_{kind}_vs_dense',
         interval(f'dyt_{kind}_vs_dense')),
    )


#: Columns of the compiled peers' table (rows of a ``--compile`` run).
COMPILED_COLUMNS = _peer_columns('compiled', 'compile', 'compiled',
                                 'compiling', gain_intervals=False)

#: Columns of the pre-packed peers' table (rows of a ``--prepack`` run).
PREPACKED_COLUMNS = _peer_columns('prepacked', 'prepack', 'pre-packed',
                                  'pre-packing')

#: Columns of the bfloat16 peers' table (rows of a ``--bf16`` run).
BF16_COLUMNS = _peer_columns('bf16', 'bf16', 'bf16', 'bf16 vs fp32')


def format_markdown(rows: Sequence[dict],
                    columns: Sequence[tuple] = TABLE_COLUMNS) -> str:
    """A markdown table of benchmark rows; ratios with their 95%
    bootstrap interval.

    Args:
        rows (Sequence[dict]): The rows.
        columns (Sequence[tuple]): ``(header, key, interval key)`` per
            column; ``key`` may be a function of the row giving its cell.
            Defaults to :data:`TABLE_COLUMNS`.
    """
    lines = [
        '| ' + ' | '.join(header for header, _, _ in columns) + ' |',
        '|---|' + '---:|' * (len(columns) - 1),
    ]
    for row in rows:
        cells = []
        for _, key, interval in columns:
            value = key(row) if callable(key) else row[key]
            text = f'{value:.3f}' if isinstance(value, float) else str(value)
            if interval:
                low, high = row[interval]
                text += f' [{low:.3f}, {high:.3f}]'
            cells.append(text)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
