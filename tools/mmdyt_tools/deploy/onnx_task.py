"""An exported model inside its library's own pre- and post-processing.

The ONNX graph holds the ``mode='tensor'`` forward only. The data
preprocessor before it and the post-processing after it (mmseg's sliding
window or whole-image inference, the resize of the logits and the argmax;
mmaction2's averaging over views) are the library's own code, run in
PyTorch on a shell of the task model built from the config stored in the
file: the shell's ``encode_decode`` (segmentor) or ``predict``
(recognizer) calls the runtime instead of the network. So an exported model
is tested with the config's ``test_dataloader`` and ``test_evaluator``
exactly as ``tools/test.py`` tests the PyTorch model.
"""
import copy
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from torch import Tensor

from mmdyt_tools.deploy.onnx_runtime import ExportedModel, run_in_batches


def config_of(exported: ExportedModel, config: Optional[str] = None,
              cfg_options: Optional[dict] = None) -> Config:
    """The config of an export: ``config`` if given, else the one stored in
    the file by ``pytorch2onnx.py``."""
    if config is not None:
        cfg = Config.fromfile(config)
    elif exported.metadata.get('config'):
        cfg = Config.fromstring(exported.metadata['config'], '.py')
    else:
        raise ValueError(
            f'{exported.path} holds no mmdyt config (it was not exported by '
            'tools/deployment/pytorch2onnx.py): pass --config')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


class RateLog:
    """The ``act_rate`` outputs of the runtime's forwards, one row per input
    (crop, image or clip)."""

    def __init__(self):
        self.rows: List[np.ndarray] = []

    def mean(self) -> Optional[float]:
        """Mean over the rows and dispatchers; None without a rate output."""
        if not self.rows:
            return None
        return float(np.concatenate(self.rows).mean())


def onnx_task_model(cfg: Config, exported: ExportedModel) -> nn.Module:
    """The config's task model with the network replaced by ``exported``.

    Returns:
        nn.Module: A segmentor or recognizer whose ``test_step`` runs the
        runtime; its :class:`RateLog` is ``model.onnx_rates``.
    """
    from mmdyt_tools.inputs import init_task_model
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None
    task = exported.metadata.get('task') or {
        'mmseg': 'segmentor', 'mmaction': 'recognizer'
    }.get(cfg.get('default_scope'))
    if task not in ('segmentor', 'recognizer'):
        raise ValueError(
            f'{exported.path} is a {task or "unknown"} export; the runtime '
            'tools run segmentors and recognizers (a detector export holds '
            'the backbone and neck only: mmdet\'s heads need mmdeploy)')
    model = init_task_model(cfg)
    rates = RateLog()
    with_rate = 'act_rate' in exported.output_names

    def run(inputs: Tensor) -> Tensor:
        outputs = run_in_batches(exported, inputs.float().contiguous()
                                 .numpy())
        if with_rate:
            rates.rows.append(outputs[-1])
        return torch.from_numpy(outputs[0])

    if task == 'segmentor':
        def encode_decode(inputs: Tensor, batch_img_metas: List[dict]):
            return model.decode_head.predict_by_feat(run(inputs),
                                                     batch_img_metas)
        model.encode_decode = encode_decode
    else:
        def predict(inputs: Tensor, data_samples, **kwargs):
            # (B, views, C, T, H, W): every view, then mmaction2's average
            scores = run(inputs.flatten(0, 1))
            return model.cls_head.predict_by_feat(scores, data_samples)
        model.predict = predict
    model.onnx_rates = rates
    return model


def evaluate(model: nn.Module, cfg: Config,
             batch_size: Optional[int] = None,
             limit: Optional[int] = None) -> dict:
    """Run a task model over the config's test set with its
    ``test_evaluator``; the metrics (mIoU, acc/top1, ...).

    Args:
        model (nn.Module): A task model (PyTorch, or from
            :func:`onnx_task_model`) in eval mode.
        cfg (Config): Its config.
        batch_size (int, optional): Samples per ``test_step``; default the
            test dataloader's.
        limit (int, optional): Only the first ``limit`` samples.
    """
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = dataset.metainfo
    size = len(dataset) if limit is None else min(limit, len(dataset))
    batch_size = batch_size or cfg.test_dataloader.get('batch_size', 1)
    with torch.no_grad():
        for start in range(0, size, batch_size):
            batch = pseudo_collate([
                dataset[i] for i in range(start, min(start + batch_size,
                                                     size))
            ])
            outputs = model.test_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
    return evaluator.evaluate(size)
