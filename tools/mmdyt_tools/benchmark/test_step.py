"""End-to-end test-time speed of a recipe: what ``tools/test.py`` runs per
sample, DyT vs adapter-only vs dense, fp32 vs bfloat16, and (segmentors
with a sliding-window test) batched crops vs mmseg's crop-by-crop path.

``benchmark_test_step.py CONFIG`` times ``model.test_step(batch)`` of
the config's model on one test sample (the recipes test at batch 1): the
data preprocessor (normalisation, padding), the config's test mode (the
sliding window of a segmentor, every view of a clip, a detector's RPN and
RoI heads) and the post-processing into data samples (a segmentor's logits
resized to the image and its argmax). The sample is a random image (or a
clip's frames) of ``--shapes`` passed through the config's own test
pipeline from the decoded image on (``LoadImageFromNDArray`` instead of the
file loader; no annotations): so a 512 x 2048 image goes through ADE20K's
``Resize`` as an ADE20K image of that shape does. Reading and decoding the
file are left out; they cost every model the same.

The timed variants, interleaved in every round (``time_interleaved``):

- ``dyt``, ``adapter``, ``dense``: the twins of ``whole_model.py`` (same
  weights; DyT's dispatchers set to ``--rate`` on a crop);
- with ``_crop1``: the same model with ``crop_batch=1`` (mmseg's own
  ``slide_inference``: one forward per crop position), without: the
  recipe's batched crops (``crop_batch=None``: all crops of the image in
  one forward, up to 8 of 512 x 512);
- with ``_bf16``: under ``torch.autocast('cpu', torch.bfloat16)``, as
  ``tools/test.py --amp`` runs it (mmengine's test loop with ``fp16=True``);
- ``dense_again``: the dense model once more, the noise control.
"""
import copy
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmdyt.engine import RateMeter, find_dyt_backbone
from mmdyt.models.segmentors.batched_slide import crop_windows
from mmdyt_tools.benchmark.rate import set_activation_rate
from mmdyt_tools.benchmark.report import format_markdown
from mmdyt_tools.benchmark.stats import ratio_fields
from mmdyt_tools.benchmark.timing import time_interleaved
from mmdyt_tools.benchmark.whole_model import WholeModels
from mmdyt_tools.flops import model_flops_report

#: Default image shapes (H, W) before the test pipeline, per task: ADE20K's
#: test shapes (shorter side 512 after ``Resize``), a COCO image (1024 on
#: the long side after ``Resize``), a Kinetics frame (short side 256).
DEFAULT_SHAPES = {
    'segmentor': ((512, 683), (512, 1024), (512, 2048)),
    'detector': ((480, 640), ),
    'recognizer': ((256, 340), ),
}

#: Pipeline steps replaced by the in-memory image (file reading, decoding)
#: or dropped (annotations).
_LOADERS = ('LoadImageFromFile', 'CheckImageFile')
_DROPPED = ('LoadAnnotations', )

#: Precisions a variant can run in.
PRECISIONS = ('fp32', 'bf16')


def _pipeline(cfg: Config) -> List[dict]:
    dataloader = cfg.get('test_dataloader') or {}
    pipeline = (dataloader.get('dataset') or {}).get('pipeline') or \
        cfg.get('test_pipeline')
    if not pipeline:
        raise ValueError('the config has no test pipeline '
                         '(test_dataloader.dataset.pipeline)')
    return [dict(step) for step in pipeline]


def e2e_sample(cfg: Config, task: str, shape: Tuple[int, int],
               seed: int = 0) -> dict:
    """One test batch (a single sample) as the config's test dataloader
    would give it for a random image or clip of ``shape`` (H, W).

    Args:
        cfg (Config): The recipe.
        task (str): A value of ``whole_model.TASKS``.
        shape (tuple[int, int]): The decoded image's (or frames') shape.
        seed (int): Seed of the random pixels. Defaults to 0.
    """
    from mmcv.transforms import Compose
    init_default_scope(cfg.get('default_scope'))
    rng = np.random.default_rng(seed)
    steps = _pipeline(cfg)
    if task == 'recognizer':
        # from the decoded frames on: the sampler's clips, as decoded
        decode = max(i for i, s in enumerate(steps)
                     if s['type'].endswith('Decode'))
        sampler = next(s for s in steps if 'clip_len' in s)
        num = sampler['clip_len'] * sampler.get('num_clips', 1)
        results = dict(
            imgs=[rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
                  for _ in range(num)],
            clip_len=sampler['clip_len'],
            num_clips=sampler.get('num_clips', 1),
            frame_inds=np.arange(num), original_shape=shape,
            img_shape=shape, modality='RGB', label=-1, start_index=0)
        return pseudo_collate([Compose(steps[decode + 1:])(results)])
    steps = [dict(type='LoadImageFromNDArray')] + [
        s for s in steps if s['type'] not in _LOADERS + _DROPPED]
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    return pseudo_collate([Compose(steps)(dict(img=image, img_id=0))])


def _slide_crops(model: nn.Module, size: Sequence[int]) -> Optional[int]:
    """Crops of one image of ``size`` in a sliding-window test; None for
    other test modes."""
    test_cfg = getattr(model, 'test_cfg', None) or {}
    if test_cfg.get('mode') != 'slide':
        return None
    return len(crop_windows(tuple(size), tuple(test_cfg['crop_size']),
                            tuple(test_cfg['stride'])))


def e2e_variants(models: WholeModels,
                 names: Sequence[str] = ('dyt', 'adapter', 'dense'),
                 precisions: Sequence[str] = PRECISIONS,
                 crop_modes: Sequence[str] = ('batched', 'crop1')
                 ) -> Dict[str, Callable[[dict], list]]:
    """The timed test steps by variant name (see the module docstring).

    Args:
        models (WholeModels): The twins.
        names (Sequence[str]): Which twins. Defaults to all three.
        precisions (Sequence[str]): Of :data:`PRECISIONS`.
        crop_modes (Sequence[str]): ``'batched'`` (the recipe's
            ``crop_batch``) and/or ``'crop1'`` (mmseg's crop by crop); only
            for sliding-window segmentors.
    """
    slide = models.task == 'segmentor' and \
        (models.dyt.test_cfg or {}).get('mode') == 'slide'
    variants = {}
    for precision in precisions:
        for mode in (crop_modes if slide else ('batched', )):
            for name in names:
                key = name + ('_crop1' if mode == 'crop1' else '') + (
                    '_bf16' if precision == 'bf16' else '')
                variants[key] = _test_step(
                    getattr(models, name), precision,
                    1 if mode == 'crop1' else 'recipe')
    if 'dense' in names:
        variants['dense_again'] = variants['dense']
    return variants


def _test_step(model: nn.Module, precision: str,
               crop_batch) -> Callable[[dict], list]:
    """``model.test_step`` in ``precision``, with ``crop_batch`` (or the
    recipe's, ``'recipe'``) set for the call."""
    recipe = (model.test_cfg or {}).get('crop_batch') if \
        hasattr(model, 'test_cfg') and model.test_cfg else None

    def step(data: dict) -> list:
        if getattr(model, 'test_cfg', None) and 'crop_size' in \
                model.test_cfg:
            model.test_cfg.crop_batch = recipe if crop_batch == 'recipe' \
                else crop_batch
        with torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=precision == 'bf16'):
            return model.test_step(data)

    return step


def _ratio_specs(variants: Sequence[str]) -> List[Tuple[str, str, str]]:
    """``(field, numerator, denominator)`` of every time ratio the variants
    allow: DyT over adapter-only and dense, batched over crop by crop,
    bfloat16 over fp32, the noise control."""
    present = set(variants)
    specs = []
    for suffix in ('', '_crop1', '_bf16', '_crop1_bf16'):
        dyt = f'dyt{suffix}'
        for peer in ('adapter', 'dense'):
            if dyt in present and f'{peer}{suffix}' in present:
                specs.append((f'dyt_vs_{peer}{suffix}', f'{peer}{suffix}',
                              dyt))
    for name in ('dyt', 'adapter', 'dense'):
        for precision in ('', '_bf16'):
            batched, crop1 = name + precision, f'{name}_crop1{precision}'
            if batched in present and crop1 in present:
                specs.append((f'{name}_batched_vs_crop1{precision}', crop1,
                              batched))
            if name in present and f'{name}_bf16' in present and \
                    not precision:
                specs.append((f'{name}_bf16_gain', name, f'{name}_bf16'))
    if 'dense_again' in present:
        specs.append(('noise_control', 'dense_again', 'dense'))
    return specs


def benchmark_e2e(models: WholeModels,
                  cfg: Config,
                  setting: str,
                  shape: Tuple[int, int],
                  variants: Dict[str, Callable[[dict], list]],
                  rate: float = 0.5,
                  warmup: int = 1,
                  repeats: int = 5,
                  timer: str = 'wall',
                  seed: int = 0) -> dict:
    """Time the test step of every variant on one sample of ``shape``.

    Returns:
        dict: ``setting``, ``shape`` (before the pipeline), ``input_shape``
        (the model's input after it), ``crops`` (sliding-window crops, or
        None), ``rate`` (DyT's measured rate on this sample), ``<variant>_ms``
        (medians) and ``<variant>_img_s`` (images per second), the ratios of
        :func:`_ratio_specs` with intervals, and the whole model's GFLOPs
        per image of ``dyt``, ``adapter`` and ``dense`` with
        ``flops_dyt_vs_adapter``.
    """
    data = e2e_sample(cfg, models.task, shape, seed)
    backbone = find_dyt_backbone(models.dyt)
    inputs = models.dyt.data_preprocessor(copy.copy(data), False)['inputs']
    calibration = inputs.flatten(0, 1) if inputs.dim() == 6 else inputs
    crop = backbone.img_size if _slide_crops(models.dyt, inputs.shape[-2:]) \
        else calibration.shape[-2:]
    set_activation_rate(backbone, calibration[..., :crop[0], :crop[1]], rate)
    with RateMeter(backbone) as meter, torch.inference_mode():
        models.dyt.test_step(data)
    crops = _slide_crops(models.dyt, inputs.shape[-2:])
    sample = (3, *crop) if calibration.dim() == 4 else \
        (3, calibration.shape[2], *crop)
    report = model_flops_report(models.dyt, sample, meter.rates,
                                f'set to {rate}', 1)
    per_image = (crops or 1) * (inputs.shape[1] if inputs.dim() == 6 else 1)
    gflops = {name: report.whole(variant) * per_image / 1e9
              for name, variant in (('dense', 'dense'),
                                    ('adapter', 'complete'), ('dyt', 'dyt'))}
    times = time_interleaved(variants, data, warmup, repeats, timer)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return dict(
        setting=setting,
        shape='x'.join(map(str, shape)),
        input_shape='x'.join(map(str, inputs.shape[-2:])),
        crops=crops,
        rate=round(float(np.mean(meter.rates)), 4),
        **{f'{name}_ms': round(ms, 1) for name, ms in medians.items()},
        **{f'{name}_img_s': round(1e3 / ms, 4)
           for name, ms in medians.items()},
        **ratio_fields(times, *_ratio_specs(list(variants)), seed=seed),
        **{f'{name}_gflops': round(value, 6)
           for name, value in gflops.items()},
        flops_dyt_vs_adapter=round(gflops['adapter'] / gflops['dyt'], 4),
        threads=torch.get_num_threads(),
        repeats=repeats,
        timer=timer)


def _column(label: str, key: str) -> tuple:
    return (label, key, f'{key}_ci')


def format_e2e_markdown(rows: Sequence[dict]) -> str:
    """Markdown tables of end-to-end rows: images per second and the
    ratios present in the rows, with 95% intervals."""
    first = rows[0]
    columns = [('setting', 'setting', None), ('image', 'shape', None),
               ('model input', 'input_shape', None),
               ('crops', lambda row: str(row['crops'] or '-'), None),
               ('threads', 'threads', None), ('rate', 'rate', None),
               ('FLOPs adapter-only / DyT', 'flops_dyt_vs_adapter', None)]
    for name in ('dyt', 'adapter', 'dense', 'dyt_bf16', 'adapter_bf16',
                 'dense_bf16', 'dyt_crop1', 'dyt_crop1_bf16'):
        if f'{name}_img_s' in first:
            columns.append((f'{name} img/s', f'{name}_img_s', None))
    labels = {
        'dyt_vs_adapter': 'DyT vs adapter-only',
        'dyt_vs_dense': 'DyT vs dense',
        'dyt_vs_adapter_crop1': 'DyT vs adapter-only, crop by crop',
        'dyt_vs_adapter_bf16': 'DyT vs adapter-only, bf16',
        'dyt_vs_dense_bf16': 'DyT vs dense, bf16',
        'dyt_batched_vs_crop1': 'DyT batched vs crop by crop',
        'adapter_batched_vs_crop1': 'adapter-only batched vs crop by crop',
        'dyt_batched_vs_crop1_bf16': 'DyT batched vs crop by crop, bf16',
        'dyt_bf16_gain': 'DyT bf16 vs fp32',
        'adapter_bf16_gain': 'adapter-only bf16 vs fp32',
        'dense_bf16_gain': 'dense bf16 vs fp32',
        'noise_control': 'noise control',
    }
    columns += [_column(label, key) for key, label in labels.items()
                if key in first]
    return format_markdown(rows, columns)
