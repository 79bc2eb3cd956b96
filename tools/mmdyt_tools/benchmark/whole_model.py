"""Whole-model speed: a segmentor, recognizer or detector with DyT,
adapter-only and dense backbones.

``benchmark_model_forward.py CONFIG`` times the whole inference model of a
config, not only its backbone (:data:`TASKS`):

- an mmseg segmentor: backbone + neck + decode head (``mode='tensor'``: the
  decode head's logits, as a sliding-window test runs them on each crop);
- an mmaction2 recognizer: backbone + cls head on one view of a clip
  (``mode='tensor', stage='head'``: the class scores);
- an mmdet detector: backbone + pyramid + RPN (with its NMS) + RoI heads
  (``mode='tensor'``: box and mask head outputs of the proposals).

Three twins share every weight and run on the same inputs, interleaved as
in ``models.py``:

- ``dyt``: the config's model, its dispatchers set to ``--rate``;
- ``adapter``: the same model with the adapter-only backbone
  (``dispatch=None``; its adapters are DyT's);
- ``dense``: the same model with the plain pre-trained ViT (no adapter).

FLOPs come from ``mmdyt_tools.flops.model_flops_report`` (analytic backbone
at the measured rates; neck and heads counted by mmengine's counter; for a
detector backbone + pyramid, as the paper counts, since its heads' cost
depends on the proposals).
"""
import copy
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from mmengine.config import Config

from mmdyt.engine import find_dyt_backbone
from mmdyt.models.layers.dispatcher import mean_rate
from mmdyt_tools.benchmark.rate import set_activation_rate
from mmdyt_tools.benchmark.report import format_markdown
from mmdyt_tools.benchmark.stats import ratio_fields
from mmdyt_tools.benchmark.timing import time_interleaved
from mmdyt_tools.flops import model_flops_report
from mmdyt_tools.inputs import clip_len_of, init_task_model
from mmdyt_tools.twins import (adapter_only_twin, randomize_adapters,
                               without_adapters)

#: Names of the timed whole models, in table order (``dense_again``: the
#: dense model timed twice, the noise control).
WHOLE_MODEL_NAMES = ('dense', 'dense_again', 'adapter', 'dyt')

#: The task of each config scope: what ``--config`` times.
TASKS = {'mmseg': 'segmentor', 'mmaction': 'recognizer', 'mmdet': 'detector'}

#: What each task's timed forward runs.
TIMED_PARTS = {
    'segmentor': 'backbone + neck + decode head',
    'recognizer': 'backbone + cls head',
    'detector': 'backbone + neck + RPN + RoI heads',
}


@dataclass
class WholeModels:
    """The three twins of a config's task model (eval mode).

    Attributes:
        task (str): A value of :data:`TASKS`.
        num_frames (int, optional): Frames per clip of a recognizer.
    """
    dense: nn.Module
    adapter: nn.Module
    dyt: nn.Module
    task: str = 'segmentor'
    num_frames: int = None

    def inputs(self, batch: int, size: Tuple[int, int],
               generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Random inputs of the task model and the backbone input they
        become: ``(B, 3, H, W)`` images, or ``(B, 1, 3, T, H, W)`` clips
        (one view) whose backbone input is ``(B, 3, T, H, W)``."""
        if self.task != 'recognizer':
            images = torch.randn(batch, 3, *size, generator=generator)
            return images, images
        clips = torch.randn(batch, 1, 3, self.num_frames, *size,
                            generator=generator)
        return clips, clips.flatten(0, 1)

    def forwards(self, size: Tuple[int, int],
                 batch: int) -> Dict[str, Callable]:
        """The timed forward of each model name (:data:`WHOLE_MODEL_NAMES`)
        on inputs of ``batch`` samples of ``size``."""
        if self.task == 'segmentor':
            def forward(model):
                return lambda inputs: model(inputs, mode='tensor')
        elif self.task == 'recognizer':
            def forward(model):
                return lambda inputs: model(
                    inputs, mode='tensor', stage='head')
        else:
            samples = _detection_samples(size, batch)

            def forward(model):
                return lambda inputs: model(inputs, samples, mode='tensor')

        return {
            'dense': forward(self.dense),
            'dense_again': forward(self.dense),
            'adapter': forward(self.adapter),
            'dyt': forward(self.dyt),
        }


def _detection_samples(size: Tuple[int, int], batch: int) -> List:
    """Data samples of unpadded, unscaled ``size`` images: what mmdet's
    RPN needs to place its proposals."""
    from mmdet.structures import DetDataSample
    meta = dict(img_shape=size, ori_shape=size, pad_shape=size,
                batch_input_shape=size, scale_factor=(1., 1.))
    return [DetDataSample(metainfo=meta) for _ in range(batch)]


def build_whole_models(cfg: Config) -> WholeModels:
    """The DyT, adapter-only and dense twins of ``cfg.model`` (random
    weights; the adapters get random up-projections so that they compute
    something).

    Raises:
        ValueError: If the config is not one of :data:`TASKS` or its
            backbone has no MLP dispatchers.
    """
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(
            'the whole-model benchmarks time the model of an mmseg, '
            f'mmaction or mmdet config; got default_scope={scope!r}. Use '
            'benchmark_backbone.py for backbones alone')
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None  # nothing to download
    torch.manual_seed(0)
    dyt = init_task_model(cfg)
    backbone = find_dyt_backbone(dyt)
    if backbone is None or backbone.dispatch != 'mlp':
        raise ValueError('the whole-model benchmarks need a DyT model with '
                         "dispatch='mlp'")
    randomize_adapters(backbone)
    adapter = adapter_only_twin(cfg, dyt)
    num_frames = clip_len_of(cfg) if TASKS[scope] == 'recognizer' else None
    return WholeModels(without_adapters(adapter), adapter, dyt,
                       TASKS[scope], num_frames)


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
    inputs, backbone_inputs = models.inputs(batch, input_size, generator)
    backbone = find_dyt_backbone(models.dyt)
    set_activation_rate(backbone, backbone_inputs, rate)
    with torch.inference_mode():
        masks = backbone.forward_with_masks(backbone_inputs)[1]
    site_rates = [float(m.float().mean()) for m in masks]
    sample = backbone_inputs.shape[1:]  # (3, H, W) or (3, T, H, W)
    report = model_flops_report(models.dyt, sample, site_rates,
                                f'set to {rate}', batch)
    gflops = {
        'dense': report.whole('dense') / 1e9,
        'adapter': report.whole('complete') / 1e9,
        'dyt': report.whole('dyt') / 1e9,
    }
    times = time_interleaved(models.forwards(input_size, batch), inputs,
                             warmup, repeats, timer)

    ratios = ratio_fields(times, ('dyt_vs_adapter', 'adapter', 'dyt'),
                          ('speedup', 'dense', 'dyt'),
                          ('noise_control', 'dense_again', 'dense'),
                          seed=seed)
    return dict(
        setting=setting,
        batch=batch,
        rate=round(float(mean_rate(masks)), 4),
        task=models.task,
        timed=TIMED_PARTS[models.task],
        parts=' + '.join(('backbone', ) + report.inference_parts),
        **{f'{name}_ms': round(statistics.median(times[name]), 2)
           for name in WHOLE_MODEL_NAMES},
        **ratios,
        **{f'{name}_gflops': round(value, 6)
           for name, value in gflops.items()},
        flops_dyt_vs_adapter=round(gflops['adapter'] / gflops['dyt'], 4),
        latency_saved=round(1 - 1 / ratios['dyt_vs_adapter'], 4),
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
