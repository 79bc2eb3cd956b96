"""FLOPs of a whole DyT model (backbone + neck + heads) at measured rates.

The backbone is counted with the analytic model :func:`dyt_vit_flops`
(exact, and able to evaluate any activation rates); the neck and heads are
dense and counted by tracing them with mmengine's counter
(``count_flops`` of ``counter.py``). Three variants of the
backbone are reported:

- ``dense``: the plain pre-trained ViT (no adapter, no dispatcher);
- ``complete``: the DyT model computing every token (adapters and
  dispatchers included; the adapter-only model for ``dispatch=None``);
- ``dyt``: the DyT model at the activation rates measured per dispatcher
  site (:class:`mmdyt.engine.RateMeter`) over a set of inputs.

The whole model at inference is the backbone plus the parts that run at
test time: the neck and decode head of a segmentor (the auxiliary head only
trains and is reported on its own row), or the neck and classification head
of a recognizer, the feature pyramid of a detector. This is how the paper's
Tables 10 and 11 count (UperNet ViT-B at 512x512: 605 G; ViTDet-B backbone +
FPN at 1024x1024: 554.86 G).
"""
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from mmdyt.engine import RateMeter, count_parameters, find_dyt_backbone
from mmdyt.models.flops import backbone_flops
from mmdyt_tools.flops.counter import count_flops

#: Backbone variants of a :class:`ModelFlops`, in table order.
VARIANTS = ('dense', 'complete', 'dyt')


def measure_rates_on_dataloader(model: nn.Module,
                                dataloader: Iterable,
                                num_samples: int) -> Tuple[List[float], int]:
    """Activation rates of ``model``'s DyTViT over a test dataloader.

    Runs ``model.test_step`` (data preprocessing and the config's test mode,
    e.g. sliding windows) on batches until ``num_samples`` samples are seen.

    Args:
        model (nn.Module): A segmentor or recognizer with a DyTViT backbone,
            in eval mode.
        dataloader (Iterable): Batches as the config's test dataloader gives.
        num_samples (int): Number of samples (images, clips) to run.

    Returns:
        tuple[list[float], int]: The rate per dispatcher site and the number
        of samples run.
    """
    backbone = _dyt_backbone(model)
    samples = 0
    progress = ProgressBar(num_samples)
    with RateMeter(backbone) as meter, torch.no_grad():
        for data in dataloader:
            outputs = model.test_step(data)
            for _ in range(min(len(outputs), num_samples - samples)):
                progress.update()
            samples += len(outputs)
            if samples >= num_samples:
                break
    print()
    if not samples:
        raise ValueError('the test dataloader gave no samples')
    return meter.rates, samples


def measure_rates_on_random(backbone: nn.Module,
                            input_shape: Sequence[int],
                            num_samples: int,
                            seed: int = 0) -> List[float]:
    """Activation rates of ``backbone`` on standard-normal random inputs.

    Args:
        backbone (DyTViT): The backbone, in eval mode.
        input_shape (Sequence[int]): One sample: (C, H, W) or (C, T, H, W).
        num_samples (int): Number of random samples, run one at a time.
        seed (int): Seed of the random inputs. Defaults to 0.
    """
    generator = torch.Generator().manual_seed(seed)
    with RateMeter(backbone) as meter, torch.no_grad():
        for _ in range(num_samples):
            backbone(torch.randn(1, *input_shape, generator=generator))
    return meter.rates


def head_flops(model: nn.Module, inputs: torch.Tensor
               ) -> Tuple[Dict[str, float], Tuple[str, ...]]:
    """FLOPs of the neck and heads of a segmentor, recognizer or detector
    (only its neck: see below).

    The backbone's (complete) outputs on ``inputs`` feed the neck, whose
    outputs feed the heads; each part is traced and counted on its own.

    Args:
        model (nn.Module): An mmseg segmentor (``decode_head``), an
            mmaction2 recognizer (``cls_head``) or an mmdet detector
            (``rpn_head`` / ``roi_head``: its neck is counted, not its
            heads), in eval mode.
        inputs (Tensor): One backbone input: (1, C, H, W) or
            (1, C, T, H, W).

    Returns:
        tuple[dict, tuple]: FLOPs per part (``neck``, ``decode_head``,
        ``auxiliary_head``, ``cls_head``, those present) and the names of
        the parts that run at inference.

    Raises:
        ValueError: If the model has none of these heads.
    """
    parts: Dict[str, float] = {}
    with torch.no_grad():
        feats = model.backbone(inputs, complete=True)
        if getattr(model, 'neck', None) is not None:
            parts['neck'] = count_flops(model.neck, (feats, ))
            feats = model.neck(feats)
            if getattr(model, 'cls_head', None) is not None and \
                    isinstance(feats, tuple) and len(feats) == 2 and \
                    isinstance(feats[1], dict):
                feats = feats[0]  # mmaction2 necks return (x, loss_aux)
    if getattr(model, 'decode_head', None) is not None:
        parts['decode_head'] = count_flops(model.decode_head, (feats, ))
        inference = ('neck', 'decode_head')
        aux = getattr(model, 'auxiliary_head', None)
        if aux is not None:
            heads = aux if isinstance(aux, nn.ModuleList) else [aux]
            parts['auxiliary_head'] = float(
                sum(count_flops(head, (feats, )) for head in heads))
    elif getattr(model, 'cls_head', None) is not None:
        parts['cls_head'] = count_flops(model.cls_head, (feats, ))
        inference = ('neck', 'cls_head')
    elif getattr(model, 'rpn_head', None) is not None or \
            getattr(model, 'roi_head', None) is not None:
        # a detector: backbone + feature pyramid, as the paper's Table 11
        # counts (the heads' cost depends on the number of proposals)
        inference = ('neck', )
    else:
        raise ValueError(
            f'{type(model).__name__} has no decode_head (mmseg segmentor), '
            'cls_head (mmaction2 recognizer) or rpn_head/roi_head (mmdet '
            'detector); count the backbone alone with '
            'mmdyt.models.flops.dyt_vit_flops')
    return parts, tuple(p for p in inference if p in parts)


@dataclass
class ModelFlops:
    """FLOPs (multiply-accumulates) and parameters of one sample through a
    DyT model.

    Attributes:
        input_shape (tuple[int]): One sample, (C, H, W) or (C, T, H, W).
        backbone (dict[str, float]): Backbone FLOPs per :data:`VARIANTS`.
        parts (dict[str, float]): FLOPs of the neck and heads (dense).
        inference_parts (tuple[str]): The parts that run at inference.
        sites (list[tuple[int, str]]): The dispatcher sites.
        rates (list[float], optional): Measured rate per site.
        rate_source (str): Where the rates come from.
        num_samples (int): Samples the rates were measured on.
        params (dict[str, tuple[int, int]]): Total and trainable parameters
            of the model and its backbone (:func:`count_parameters`).
    """
    input_shape: Tuple[int, ...]
    backbone: Dict[str, float]
    parts: Dict[str, float]
    inference_parts: Tuple[str, ...]
    sites: List[Tuple[int, str]] = field(default_factory=list)
    rates: Optional[List[float]] = None
    rate_source: str = 'none'
    num_samples: int = 0
    params: Dict[str, Tuple[int, int]] = field(default_factory=dict)

    @property
    def mean_rate(self) -> Optional[float]:
        """Mean of the measured rates over the sites (None without)."""
        if not self.rates:
            return None
        return sum(self.rates) / len(self.rates)

    @property
    def whole_name(self) -> str:
        """What :meth:`whole` covers: the whole inference model, or the
        backbone and neck of a detector (its heads are not counted)."""
        if self.inference_parts == ('neck', ):
            return 'backbone + neck'
        return 'whole model'

    def whole(self, variant: str) -> float:
        """FLOPs of the whole model at inference with backbone ``variant``."""
        return self.backbone[variant] + sum(
            self.parts[p] for p in self.inference_parts)

    def rows(self) -> List[Tuple[str, float, float, float]]:
        """``(name, dense, complete, dyt)`` FLOPs rows of the table."""
        rows = [('backbone', *(self.backbone[v] for v in VARIANTS))]
        for name in self.inference_parts:
            rows.append((name, *[self.parts[name]] * 3))
        rows.append((self.whole_name, *(self.whole(v) for v in VARIANTS)))
        for name, flops in self.parts.items():
            if name not in self.inference_parts:
                rows.append((f'{name} (training only)', *[flops] * 3))
        return rows

    def to_dict(self) -> dict:
        """A JSON-compatible dict (tuples as lists), with the whole model's
        FLOPs and a GFLOPs table."""
        result = asdict(self)
        result['mean_rate'] = self.mean_rate
        result['whole'] = {v: self.whole(v) for v in VARIANTS}
        result['gflops'] = {
            name: dict(zip(VARIANTS, (f / 1e9 for f in values)))
            for name, *values in self.rows()
        }
        return json.loads(json.dumps(result))

    def format_table(self) -> str:
        """A markdown table of GFLOPs per part and backbone variant."""
        rate = self.mean_rate
        dyt = 'no dispatchers' if rate is None else f'DyT @ r={rate:.3f}'
        lines = [
            f'| part | dense (no DyT) | all tokens | {dyt} |',
            '|---|---:|---:|---:|',
        ]
        for name, *values in self.rows():
            cells = ' | '.join(format_gflops(v) for v in values)
            lines.append(f'| {name} | {cells} |')
        return '\n'.join(lines)


def format_gflops(flops: float) -> str:
    """``flops`` in GFLOPs: 605.4, 17.58, 0.004213."""
    gflops = flops / 1e9
    if gflops >= 100:
        return f'{gflops:.1f}'
    if gflops >= 1:
        return f'{gflops:.2f}'
    return f'{gflops:.4g}'


def _dyt_backbone(model: nn.Module) -> nn.Module:
    backbone = find_dyt_backbone(model)
    if backbone is None:
        raise ValueError(f'{type(model).__name__} has no DyTViT backbone')
    return backbone


def model_flops_report(model: nn.Module,
                       input_shape: Sequence[int],
                       rates: Optional[Sequence[float]] = None,
                       rate_source: str = 'none',
                       num_samples: int = 0) -> ModelFlops:
    """FLOPs and parameters of one sample through ``model``.

    Args:
        model (nn.Module): A segmentor or recognizer with a DyTViT backbone,
            in eval mode (BatchNorm in inference form: revert SyncBN on CPU).
        input_shape (Sequence[int]): One sample, (C, H, W) for images or
            (C, T, H, W) for a video clip of T frames.
        rates (Sequence[float], optional): Activation rate per dispatcher
            site, e.g. from :class:`RateMeter`. None means every token is
            computed. Defaults to None.
        rate_source (str): Where ``rates`` come from, for the report.
            Defaults to ``'none'``.
        num_samples (int): Samples ``rates`` were measured on.
            Defaults to 0.

    Returns:
        ModelFlops: The report.
    """
    backbone = _dyt_backbone(model)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4):
        raise ValueError('input_shape must be (C, H, W) or (C, T, H, W), '
                         f'got {input_shape}')
    size = input_shape[-2:]
    frames = input_shape[1] if len(input_shape) == 4 else 1
    if rates is not None:
        rates = [float(r) for r in rates]
    flops = {
        'dense': backbone_flops(backbone, size, with_dyt=False).total,
        'complete': backbone_flops(backbone, size).total,
        'dyt': backbone_flops(backbone, size, rates).total,
    }
    parts, inference = head_flops(model, torch.randn(1, *input_shape))
    report = ModelFlops(
        input_shape=input_shape,
        backbone={k: v * frames
                  for k, v in flops.items()},
        parts={k: float(v)
               for k, v in parts.items()},
        inference_parts=inference,
        sites=list(backbone.dispatch_sites),
        rates=rates,
        rate_source=rate_source,
        num_samples=num_samples,
        params=count_parameters(model))
    print_log(
        f'FLOPs of one {"x".join(map(str, input_shape))} sample computed; '
        f'rates: {rate_source}', logger='current')
    return report
