"""Where DyT's time goes, op by op: dtype casts under bfloat16 autocast and
the small matmuls of the adapters and dispatchers.

Two questions the speed tables cannot answer by themselves:

- **Casts under autocast.** Does DyT's gathered evaluation convert
  activations between float32 and bfloat16 more often than the dense ViT
  (a round trip per block)? ``torch.profiler`` counts the dtype conversions
  (``aten::_to_copy``) of one forward of the dense ViT, the adapter-only
  model and DyT under ``torch.autocast(dtype=torch.bfloat16)`` and their
  time; the table gives them per block.
- **The small matmuls.** How much of a forward do the adapters'
  projections (C -> d -> C) and the dispatchers' scoring (C -> 1) take, and
  would one GEMM for the adapter's down-projection and the dispatcher's
  scoring (both read the same tokens, C -> d + 1) be faster than two? The
  profile sums the ``aten::linear`` calls by weight shape; the fused and the
  separate form are timed interleaved on one block's tokens.
- **What the weight casts cost.** Under autocast every forward converts
  each matmul weight to bfloat16 again (autocast caches casts only for
  weights that require grad, within one autocast region). The dense ViT and
  DyT under autocast are timed beside copies whose matmul weights are
  bfloat16 already (the same outputs, bit for bit): their ratio is what the
  weight casts cost.

Examples::

    cd tools/analysis_tools
    python profile_ops.py --preset vit-b-224 --batch 1 8 --threads 1 2
    python profile_ops.py --preset vit-b-224 --batch 1 --threads 1 \\
        --json profile_224.json
"""
import argparse
import copy
import json
import math
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

import mmdyt  # noqa: F401  (compat fixes, registration)
from mmdyt.models.layers import Adapter
from mmdyt.utils.torch_compat import PROFILER_DTYPES, require_torch
from mmdyt_tools.benchmark.models import build_benchmark_models
from mmdyt_tools.benchmark.peers import AutocastPeer
from mmdyt_tools.benchmark.presets import PRESETS
from mmdyt_tools.benchmark.rate import set_activation_rate
from mmdyt_tools.benchmark.stats import bootstrap_ratio
from mmdyt_tools.benchmark.timing import time_interleaved

#: Kinds of dtype conversion :func:`op_totals` tells apart.
CAST_KINDS = ('weight', 'down', 'up', 'other')
#: The profiler's names of the autocast dtypes.
LOW_PRECISION = ('c10::BFloat16', 'c10::Half')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='vit-b-224',
                        choices=sorted(PRESETS))
    parser.add_argument('--arch', default=None,
                        help='a DyTViT arch name instead of the preset\'s')
    parser.add_argument('--img-size', type=int, default=None)
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--threads', type=int, nargs='+', default=[2])
    parser.add_argument('--rate', type=float, default=0.5,
                        help='DyT\'s activation rate (dispatcher biases)')
    parser.add_argument('--repeats', type=int, default=50,
                        help='timed calls of each small-matmul form')
    parser.add_argument('--json', default=None, help='write the rows here')
    return parser.parse_args(argv)


def op_totals(model: nn.Module, inputs: Tensor) -> dict:
    """Profile one forward (after a warm-up one) and total the ops.

    Returns:
        dict: ``forward_us`` (the whole forward's CPU time); the dtype
        conversions (``aten::_to_copy``) by kind, counts and CPU time:
        ``weight`` (a parameter cast for a low-precision matmul), ``down``
        (activations float32 -> bfloat16), ``up`` (activations back to
        float32) and ``other`` (masks and scalars), as ``casts_<kind>``,
        ``cast_us_<kind>`` and ``cast_elements_<kind>``; and
        ``matmul_us`` by the matmul's ``'out x in'`` features
        (``aten::linear`` and, outside it, ``aten::addmm(_)``, whose second
        matrix is the transposed weight).
    """
    # matmul and conv weights and biases (not the 3-D position embedding
    # or cls token, shaped like a batch of one image's tokens)
    params = {tuple(p.shape) for p in model.parameters() if p.dim() != 3}
    with torch.inference_mode():
        model(inputs)
        with profile(activities=[ProfilerActivity.CPU],
                     record_shapes=True) as prof:
            with torch.profiler.record_function('forward'):
                model(inputs)
    totals = dict(forward_us=0.0, matmul_us={})
    for kind in CAST_KINDS:
        totals[f'casts_{kind}'], totals[f'cast_us_{kind}'] = 0, 0.0
        totals[f'cast_elements_{kind}'] = 0
    for event in prof.events():
        if event.name == 'forward':
            totals['forward_us'] = event.cpu_time_total
        elif event.name == 'aten::_to_copy':
            if _inside(event, 'aten::_to_copy'):
                continue  # a conversion inside a conversion: count it once
            if tuple(event.input_shapes[0]) in params:
                kind = 'weight'
            elif event.input_dtypes[0] == 'float':
                kind = 'down'
            elif event.input_dtypes[0] in LOW_PRECISION:
                kind = 'up'
            else:
                kind = 'other'
            totals[f'casts_{kind}'] += 1
            totals[f'cast_elements_{kind}'] += math.prod(
                event.input_shapes[0])
            totals[f'cast_us_{kind}'] += event.cpu_time_total
        elif event.name == 'aten::linear' or (
                event.name in ('aten::addmm', 'aten::addmm_')
                and not _inside(event, 'aten::linear')):
            if event.name == 'aten::linear':
                out_features, in_features = event.input_shapes[1]
            else:
                in_features, out_features = event.input_shapes[2]
            key = f'{out_features} x {in_features}'
            totals['matmul_us'][key] = (totals['matmul_us'].get(key, 0.0) +
                                        event.cpu_time_total)
    return totals


def _inside(event, name: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == name:
            return True
        parent = parent.cpu_parent
    return False


class SeparateSmallGEMMs(nn.Module):
    """The adapter's down-projection and the dispatcher's scoring as DyT
    computes them: two matmuls on the same tokens."""

    def __init__(self, down: nn.Linear, score: nn.Linear):
        super().__init__()
        self.down, self.score = down, score

    def forward(self, x: Tensor):
        return self.down(x), self.score(x)


class FusedSmallGEMMs(nn.Module):
    """The same two results from one matmul with the weights stacked
    (``d + 1`` outputs), split afterwards."""

    def __init__(self, down: nn.Linear, score: nn.Linear):
        super().__init__()
        self.split = down.out_features
        self.weight = nn.Parameter(torch.cat([down.weight, score.weight]))
        self.bias = nn.Parameter(torch.cat([down.bias, score.bias]))

    def forward(self, x: Tensor):
        out = F.linear(x, self.weight, self.bias)
        return out[..., :self.split], out[..., self.split:]


def small_gemm_forms(model, inputs: Tensor, repeats: int) -> dict:
    """Time the separate and the fused form on the tokens that reach the
    first block's MLP part (``inputs`` through the patch embedding)."""
    block = model.blocks[0]
    down, score = block.mlp_adapter.down, block.mlp_dispatcher.linear
    with torch.inference_mode():
        tokens = model.patch_embed(inputs)
        tokens = tokens[0] if isinstance(tokens, tuple) else tokens
        tokens = tokens.flatten(1, -2) if tokens.dim() > 3 else tokens
    separate = SeparateSmallGEMMs(down, score)
    fused = FusedSmallGEMMs(down, score)
    with torch.inference_mode():
        for got, want in zip(fused(tokens), separate(tokens)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    times = time_interleaved(dict(separate=separate, fused=fused), tokens,
                             warmup=5, repeats=repeats)
    ratio, low, high = bootstrap_ratio(times['separate'], times['fused'])
    median = {name: sorted(t)[len(t) // 2] * 1e3 for name, t in times.items()}
    return dict(tokens=list(tokens.shape[:-1]),
                separate_us=median['separate'], fused_us=median['fused'],
                fused_speedup=ratio, fused_speedup_ci=[low, high])


def with_bfloat16_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose linear layers hold bfloat16 weights, but
    the dispatchers' (which score in float32) and the adapters'
    up-projections (float32 ``addmm`` into the stream): under autocast it
    computes what ``model`` computes, without converting weights per
    forward."""
    model = copy.deepcopy(model)
    keep = {id(d.linear) for d in getattr(model, 'dispatchers', list)()}
    keep |= {id(m.up) for m in model.modules() if isinstance(m, Adapter)}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module) not in keep:
            module.to(torch.bfloat16)
    return model


def weight_cast_cost(models, inputs: Tensor, repeats: int) -> dict:
    """Time the dense ViT and DyT under autocast with float32 weights
    (cast per forward) and with bfloat16 weights, interleaved."""
    peers = {}
    for name in ('dense', 'dyt'):
        model = getattr(models, name)
        peers[name] = AutocastPeer(model)
        peers[f'{name}_bf16_weights'] = AutocastPeer(
            with_bfloat16_weights(model))
    times = time_interleaved(peers, inputs, warmup=2, repeats=repeats)
    row = {}
    for name in ('dense', 'dyt'):
        ratio, low, high = bootstrap_ratio(times[name],
                                           times[f'{name}_bf16_weights'])
        row[f'{name}_weight_cast_cost'] = ratio
        row[f'{name}_weight_cast_cost_ci'] = [low, high]
    return row


def profile_setting(models, batch: int, img_size: int, rate: float,
                    repeats: int) -> dict:
    """One row: casts under bfloat16 autocast and the small matmuls'
    share, for one batch size."""
    torch.manual_seed(batch)
    inputs = torch.randn(batch, 3, img_size, img_size)
    set_activation_rate(models.dyt, inputs, rate)
    depth = len(models.dyt.blocks)
    row = dict(batch=batch, img_size=img_size, rate=rate, depth=depth,
               threads=torch.get_num_threads())
    for name in ('dense', 'adapter', 'dyt'):
        totals = op_totals(AutocastPeer(getattr(models, name)), inputs)
        for kind in CAST_KINDS:
            row[f'{name}_bf16_{kind}_casts_per_block'] = (
                totals[f'casts_{kind}'] / depth)
        row[f'{name}_bf16_activation_elements_per_block'] = sum(
            totals[f'cast_elements_{kind}'] for kind in ('down', 'up')) / depth
        row[f'{name}_bf16_cast_share'] = sum(
            totals[f'cast_us_{kind}']
            for kind in CAST_KINDS) / totals['forward_us']
    dims = models.dyt.embed_dims
    bottleneck = models.dyt.blocks[0].mlp_adapter.down.out_features
    totals = op_totals(models.dyt, inputs)
    shares = {
        'adapter_down': f'{bottleneck} x {dims}',
        'adapter_up': f'{dims} x {bottleneck}',
        'dispatcher': f'1 x {dims}'
    }
    for part, shape in shares.items():
        row[f'{part}_share'] = (totals['matmul_us'].get(shape, 0.0) /
                                totals['forward_us'])
    row.update(small_gemm_forms(models.dyt, inputs, repeats))
    row.update(weight_cast_cost(models, inputs, max(3, repeats // 10)))
    return row


def format_markdown(rows: List[dict]) -> str:
    """The rows as a markdown table."""

    def casts(r, name):
        return ' / '.join(f"{r[f'{name}_bf16_{kind}_casts_per_block']:.1f}"
                          for kind in ('weight', 'down', 'up'))

    def elements(r, name):
        return (r[f'{name}_bf16_activation_elements_per_block'] /
                r['dense_bf16_activation_elements_per_block'])

    lines = [
        '| batch | threads | bf16 casts per block (weights / activations to '
        'bf16 / to fp32): dense, adapter-only, DyT | activation elements '
        'cast, vs dense: adapter-only, DyT | cast time share: dense, DyT | '
        'adapter down / up / dispatcher share of fp32 DyT | separate / fused '
        '(us) | fused speedup | bf16 with weights pre-cast, speedup: '
        'dense, DyT |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        low, high = r['fused_speedup_ci']
        lines.append(
            f"| {r['batch']} | {r['threads']} | {casts(r, 'dense')}, "
            f"{casts(r, 'adapter')}, {casts(r, 'dyt')} | "
            f"{elements(r, 'adapter'):.2f}, {elements(r, 'dyt'):.2f} | "
            f"{r['dense_bf16_cast_share']:.1%}, "
            f"{r['dyt_bf16_cast_share']:.1%} | "
            f"{r['adapter_down_share']:.2%} / {r['adapter_up_share']:.2%} / "
            f"{r['dispatcher_share']:.2%} | "
            f"{r['separate_us']:.0f} / {r['fused_us']:.0f} | "
            f"{r['fused_speedup']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{_ratio(r, 'dense_weight_cast_cost')}, "
            f"{_ratio(r, 'dyt_weight_cast_cost')} |")
    return '\n'.join(lines)


def _ratio(row: dict, key: str) -> str:
    low, high = row[f'{key}_ci']
    return f'{row[key]:.3f} [{low:.3f}, {high:.3f}]'


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    require_torch(PROFILER_DTYPES)
    preset = PRESETS[args.preset]
    if preset.get('num_frames') or preset.get('vitdet'):
        raise SystemExit(f'profile_ops.py profiles image ViTs; preset '
                         f'{args.preset!r} is not one')
    arch = args.arch or preset['arch']
    img_size = args.img_size or preset['img_size']
    models = build_benchmark_models(arch=arch, img_size=img_size)
    rows = []
    threads = torch.get_num_threads()
    try:
        for num_threads in args.threads:
            torch.set_num_threads(num_threads)
            for batch in args.batch:
                print(f'profiling batch {batch} ({arch}, {img_size}px, '
                      f'{num_threads} threads)', flush=True)
                rows.append(profile_setting(models, batch, img_size,
                                            args.rate, args.repeats))
    finally:
        torch.set_num_threads(threads)
    print(format_markdown(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
