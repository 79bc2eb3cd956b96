"""Export a task model of a config to ONNX, with DyT's token skipping.

The exported graph is the model's ``mode='tensor'`` forward (no data
preprocessing, no post-processing, as mmdeploy exports mmseg models):

- a segmentor: backbone + neck + decode head, the decode head's logits
  ``(B, classes, H / s, W / s)`` for inputs ``(B, 3, H, W)``;
- a recognizer: backbone + cls head on one view, the class scores
  ``(B, classes)`` for clips ``(B, 3, T, H, W)``;
- a detector: backbone + neck, the feature pyramid (mmdet's RPN and RoI
  heads need mmdeploy's rewrites of their NMS and RoI ops).

``torch.onnx.export(..., dynamo=True)`` traces DyT's evaluation path as it
runs: per block, the dispatcher's scores, ``NonZero`` of the active tokens,
a ``Gather`` of them, the MLP on the gathered rows only and a ``ScatterND``
(add) of the updates back into the token stream. The number of active
tokens stays data dependent in the graph: no fixed top-k.

With ``with_rate`` the graph has a second output, ``act_rate``
``(B, dispatchers)``: per input, the share of its tokens each dispatcher
computed (:func:`~mmdyt.models.layers.dispatcher.mean_rate` is its mean).
"""
import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from torch import Tensor

from mmdyt.engine import find_dyt_backbone
from mmdyt.utils.torch_compat import (ONNX_DYNAMIC_BATCH, ONNX_EXPORT,
                                      require_torch)

#: The task of each config scope.
TASKS = {'mmseg': 'segmentor', 'mmaction': 'recognizer', 'mmdet': 'detector'}

#: The exported forward of each task.
EXPORTED_PARTS = {
    'segmentor': 'backbone + neck + decode head (logits)',
    'recognizer': 'backbone + cls head (class scores)',
    'detector': 'backbone + neck (feature pyramid)',
}

#: Variants of a model :func:`variant_of` makes: the model as trained
#: (DyT), its adapter-only twin (the same weights, no token skipped) and its
#: dense twin (the pre-trained ViT without adapters).
VARIANTS = ('dyt', 'adapter', 'dense')

#: The key of the export's description in the ONNX file's metadata.
METADATA_KEY = 'mmdyt'


class TensorModel(nn.Module):
    """A task model's ``mode='tensor'`` forward on one input tensor: what is
    exported.

    Args:
        model (nn.Module): An mmseg segmentor, mmaction2 recognizer or mmdet
            detector with a :class:`~mmdyt.models.DyTViT` backbone, in eval
            mode.
        task (str): A value of :data:`TASKS`.
        with_rate (bool): Also return the activation rate of every
            dispatcher for every input, ``(B, dispatchers)``. Needs a
            backbone with dispatchers. Defaults to False.
    """

    def __init__(self, model: nn.Module, task: str, with_rate: bool = False):
        super().__init__()
        if task not in EXPORTED_PARTS:
            raise ValueError(f'task must be one of {sorted(EXPORTED_PARTS)}, '
                             f'got {task!r}')
        self.model = model
        self.task = task
        self.backbone = find_dyt_backbone(model)
        if self.backbone is None:
            raise ValueError('the model has no DyTViT backbone')
        if with_rate and not self.backbone.dispatch_sites:
            raise ValueError(
                'with_rate needs a backbone with token dispatchers; this one '
                'has none (dispatch=None: the adapter-only model skips no '
                'token, its rate is 1)')
        self.with_rate = with_rate

    def output_names(self) -> List[str]:
        """Names of the graph's outputs, in order."""
        if self.task == 'segmentor':
            names = ['seg_logits']
        elif self.task == 'recognizer':
            names = ['cls_scores']
        else:
            names = [f'feat{i}' for i in range(self._num_levels())]
        return names + (['act_rate'] if self.with_rate else [])

    def _num_levels(self) -> int:
        neck = getattr(self.model, 'neck', None)
        for attr in ('num_outs', 'num_levels'):
            if neck is not None and hasattr(neck, attr):
                return int(getattr(neck, attr))
        return len(self.backbone.out_indices)

    def _task_forward(self, x: Tensor):
        if self.task == 'segmentor':
            return (self.model(x, mode='tensor'), )
        if self.task == 'recognizer':  # one view: (B, 1, C, T, H, W)
            return (self.model(x[:, None], mode='tensor', stage='head'), )
        return tuple(self.model.extract_feat(x))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if not self.with_rate:
            return self._task_forward(x)
        masks: List[List[Tensor]] = []
        handle = self.backbone.register_mask_hook(
            lambda m, inputs: masks.append(m))
        try:
            outputs = self._task_forward(x)
        finally:
            handle.remove()
        # rows of a clip (its frames) belong to its input
        rates = torch.stack(
            [m.float().reshape(x.shape[0], -1).mean(dim=1)
             for m in masks[-1]], dim=1)
        return outputs + (rates, )


def task_of(cfg: Config) -> str:
    """The task (:data:`TASKS`) of a config, by its ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(
            f'cannot export a model of default_scope={scope!r}; mmdyt '
            f'exports mmseg, mmaction and mmdet configs')
    return TASKS[scope]


def variant_of(cfg: Config, model: nn.Module, variant: str) -> nn.Module:
    """``model`` itself (``'dyt'``), its adapter-only twin (``'adapter'``)
    or its dense twin (``'dense'``); see :data:`VARIANTS` and
    ``mmdyt_tools.twins``."""
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {VARIANTS}, got '
                         f'{variant!r}')
    if variant == 'dyt':
        return model
    backbone = find_dyt_backbone(model)
    if backbone.dispatch not in (None, 'mlp'):
        raise ValueError(f"the {variant} twin is made for MLP dispatch "
                         f"(dispatch='mlp'), got {backbone.dispatch!r}")
    from mmdyt_tools.twins import adapter_only_twin, without_adapters
    twin = adapter_only_twin(cfg, model) if backbone.dispatch_sites else \
        model
    return twin if variant == 'adapter' else without_adapters(twin)


def example_input(task: str, shape: Sequence[int], batch: int,
                  num_frames: Optional[int] = None,
                  seed: int = 0) -> Tensor:
    """A random input of the exported forward: images ``(B, 3, H, W)`` or
    clips ``(B, 3, T, H, W)``."""
    generator = torch.Generator().manual_seed(seed)
    if task == 'recognizer':
        if not num_frames:
            raise ValueError('a recognizer export needs the frames per clip')
        return torch.randn(batch, 3, num_frames, *shape, generator=generator)
    return torch.randn(batch, 3, *shape, generator=generator)


def export_onnx(tensor_model: nn.Module,
                example: Tensor,
                path: str,
                dynamic_batch: bool = False,
                metadata: Optional[Dict[str, object]] = None,
                output_names: Optional[List[str]] = None) -> List[str]:
    """Export ``tensor_model`` on ``example`` to the ONNX file ``path``.

    Args:
        tensor_model (nn.Module): The forward to export: a
            :class:`TensorModel`, or any module of one tensor input.
        example (Tensor): An input of the exported shape.
        path (str): Where the ``.onnx`` file goes (weights inside it).
        dynamic_batch (bool): Leave the batch dimension open (traced on a
            batch of at least 2: ``torch.export`` fixes a dimension of
            size 1). Defaults to False: every dimension is fixed to
            ``example``'s.
        metadata (dict, optional): JSON-serialisable facts stored in the
            file's metadata under :data:`METADATA_KEY` (the config, the
            input shape, ...). Defaults to None.
        output_names (list[str], optional): Names of the graph's outputs;
            default a :class:`TensorModel`'s, else the exporter's.

    Returns:
        list[str]: The names of the graph's outputs.

    Raises:
        RuntimeError: If the installed torch is too old for the export, or
            for a dynamic batch (:data:`~mmdyt.utils.torch_compat.
            TORCH_FEATURES`).
    """
    require_torch(ONNX_EXPORT)
    if dynamic_batch:
        require_torch(ONNX_DYNAMIC_BATCH)
    names = output_names
    if names is None and isinstance(tensor_model, TensorModel):
        names = tensor_model.output_names()
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim('batch', min=1)}, )
        if example.shape[0] < 2:  # torch.export fixes a dimension of 1
            example = example.expand(2, *example.shape[1:]).contiguous()
    with torch.no_grad():
        program = torch.onnx.export(
            tensor_model.eval(), (example, ),
            dynamo=True,
            input_names=['inputs'],
            output_names=names,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False)
    # the description goes into the model before it is written (once)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata or {})
    program.save(path, external_data=False)
    return [value.name for value in program.model.graph.outputs]


def graph_op_counts(path: str) -> Dict[str, int]:
    """How many nodes of each op type the ONNX graph at ``path`` has
    (its subgraphs included)."""
    import onnx
    counts: Dict[str, int] = {}

    def visit(graph):
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
    visit(onnx.load(path, load_external_data=False).graph)
    return counts
