"""Whole-model speed: a segmentor with DyT, adapter-only, dense.

``benchmark.py --config CONFIG`` times the whole inference model of an mmseg
config, not only its backbone: backbone + neck + decode head
(``mode='tensor'``: the decode head's logits, as a sliding-window test runs
them on each crop). Three twins share every weight and run on the same
inputs, interleaved as in ``benchmark_models``:

- ``dyt``: the config's model, its dispatchers set to ``--rate``;
- ``adapter``: the same model with the adapter-only backbone
  (``dispatch=None``; its adapters are DyT's);
- ``dense``: the same model with the plain pre-trained ViT (no adapter).

FLOPs come from ``model_flops.model_flops_report`` (analytic backbone at the
measured rates; neck and heads counted by mmengine's counter).
"""
import copy
import statistics
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from benchmark_models import (bootstrap_ratio, format_markdown,
                              set_activation_rate, time_interleaved)
from mmdyt.engine import find_dyt_backbone
from mmdyt.models.dispatcher import mean_rate
from model_flops import model_flops_report
from model_inputs import init_task_model

#: Names of the timed whole models, in table order (``dense_again``: the
#: dense model timed twice, the noise control).
WHOLE_MODEL_NAMES = ('dense', 'dense_again', 'adapter', 'dyt')


@dataclass
class WholeModels:
    """The three twins of a config's task model (eval mode)."""
    dense: nn.Module
    adapter: nn.Module
    dyt: nn.Module

    def forwards(self) -> Dict[str, callable]:
        def forward(model):
            return lambda inputs: model(inputs, mode='tensor')

        return {
            'dense': forward(self.dense),
            'dense_again': forward(self.dense),
            'adapter': forward(self.adapter),
            'dyt': forward(self.dyt),
        }


def _without_adapters(model: nn.Module) -> nn.Module:
    """A copy of an adapter-only model whose backbone has no adapter left:
    the plain pre-trained ViT inside the same neck and heads."""
    dense = copy.deepcopy(model)
    for block in find_dyt_backbone(dense).blocks:
        block.mlp_adapter = None
    return dense


def build_whole_models(cfg: Config) -> WholeModels:
    """The DyT, adapter-only and dense twins of ``cfg.model`` (random
    weights; the adapters get random up-projections so that they compute
    something).

    Raises:
        ValueError: If the config is not a segmentor's or its backbone has
            no MLP dispatchers.
    """
    if cfg.get('default_scope') != 'mmseg':
        raise ValueError(
            'benchmark.py --config times mmseg segmentors (whole models at '
            f"one input size); got default_scope={cfg.get('default_scope')!r}."
            ' Use --preset for backbones (vit-b-video, vitdet-b-1024)')
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None  # nothing to download
    torch.manual_seed(0)
    dyt = init_task_model(cfg)
    backbone = find_dyt_backbone(dyt)
    if backbone is None or backbone.dispatch != 'mlp':
        raise ValueError('benchmark.py --config needs a DyT model with '
                         "dispatch='mlp'")
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if '_adapter.up' in name:
                param.normal_(0, 0.02)
    cfg.model.backbone.dispatch = None
    adapter = init_task_model(cfg)
    adapter.load_state_dict(dyt.state_dict(), strict=False)
    return WholeModels(_without_adapters(adapter), adapter, dyt)


def benchmark_whole(models: WholeModels,
                    setting: str,
                    batch: int,
                    input_size: Tuple[int, int],
                    rate: float = 0.5,
                    warmup: int = 2,
                    repeats: int = 10,
                    timer: str = 'wall',
                    seed: int = 0) -> dict:
    """Time the three whole models on one batch; compare with FLOPs.

    Returns:
        dict: ``setting, batch, rate`` (measured), ``<model>_ms``
        (medians), ``dyt_vs_adapter`` (adapter-only / DyT time) and
        ``speedup`` (dense / DyT time) with intervals, ``noise_control``,
        the whole model's GFLOPs of each (per sample) and
        ``flops_dyt_vs_adapter``, the FLOPs ratio.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, *input_size, generator=generator)
    backbone = find_dyt_backbone(models.dyt)
    set_activation_rate(backbone, inputs, rate)
    with torch.inference_mode():
        masks = backbone.forward_with_masks(inputs)[1]
    site_rates = [float(m.float().mean()) for m in masks]
    report = model_flops_report(models.dyt, (3, *input_size), site_rates,
                                f'set to {rate}', batch)
    gflops = {
        'dense': report.whole('dense') / 1e9,
        'adapter': report.whole('complete') / 1e9,
        'dyt': report.whole('dyt') / 1e9,
    }
    times = time_interleaved(models.forwards(), inputs, warmup, repeats,
                             timer)

    def ratio(num: str, den: str) -> dict:
        value, low, high = bootstrap_ratio(times[num], times[den], seed=seed)
        return dict(value=round(value, 4), ci=[round(low, 4), round(high, 4)])

    vs_adapter = ratio('adapter', 'dyt')
    speedup = ratio('dense', 'dyt')
    noise = ratio('dense_again', 'dense')
    return dict(
        setting=setting,
        batch=batch,
        rate=round(float(mean_rate(masks)), 4),
        parts=' + '.join(('backbone', ) + report.inference_parts),
        **{f'{name}_ms': round(statistics.median(times[name]), 2)
           for name in WHOLE_MODEL_NAMES},
        dyt_vs_adapter=vs_adapter['value'],
        dyt_vs_adapter_ci=vs_adapter['ci'],
        speedup=speedup['value'],
        speedup_ci=speedup['ci'],
        noise_control=noise['value'],
        noise_control_ci=noise['ci'],
        **{f'{name}_gflops': round(value, 6)
           for name, value in gflops.items()},
        flops_dyt_vs_adapter=round(gflops['adapter'] / gflops['dyt'], 4),
        latency_saved=round(1 - 1 / vs_adapter['value'], 4),
        flops_saved=round(1 - gflops['dyt'] / gflops['adapter'], 4),
        threads=torch.get_num_threads(),
        repeats=repeats)


#: Columns of :func:`format_whole_markdown` (``format_markdown``'s format).
WHOLE_COLUMNS = (
    ('setting', 'setting', None),
    ('batch', 'batch', None),
    ('threads', 'threads', None),
    ('rate', 'rate', None),
    ('GFLOPs adapter-only → DyT',
     lambda row: f"{row['adapter_gflops']:.2f} → {row['dyt_gflops']:.2f}",
     None),
    ('FLOPs saved', 'flops_saved', None),
    ('adapter-only / DyT time', 'dyt_vs_adapter', 'dyt_vs_adapter_ci'),
    ('latency saved', 'latency_saved', None),
    ('dense / DyT time', 'speedup', 'speedup_ci'),
    ('noise control', 'noise_control', 'noise_control_ci'),
)


def format_whole_markdown(rows: Sequence[dict]) -> str:
    """A markdown table of whole-model rows, with 95% intervals."""
    return format_markdown(rows, WHOLE_COLUMNS)
