"""The adapter-only and dense twins of a DyT task model, sharing its
weights: what the whole-model and end-to-end benchmarks time and what
``tools/deployment/pytorch2onnx.py --variant`` exports."""
import copy

import torch
import torch.nn as nn
from mmengine.config import Config

from mmdyt.engine import find_dyt_backbone
from mmdyt_tools.inputs import init_task_model


@torch.no_grad()
def randomize_adapters(model: nn.Module, std: float = 0.02) -> None:
    """Give every adapter of ``model`` a random up-projection (a fresh
    adapter's is zero and computes nothing), in place."""
    for name, param in model.named_parameters():
        if '_adapter.up' in name:
            param.normal_(0, std)


def adapter_only_twin(cfg: Config, model: nn.Module) -> nn.Module:
    """``cfg.model`` with ``dispatch=None`` (no distillation), holding
    ``model``'s weights; its dispatchers are left out.

    Raises:
        RuntimeError: If the twin does not take the model's weights.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.dispatch = None
    if cfg.model.get('dyt_loss'):  # no dispatcher, nothing to distil into
        cfg.model.dyt_loss.distill = False
    twin = init_task_model(cfg)
    missing, unexpected = twin.load_state_dict(model.state_dict(),
                                               strict=False)
    if missing or any('_dispatcher.' not in k for k in unexpected):
        raise RuntimeError(f'the adapter-only twin does not take the '
                           f'model\'s weights: missing {missing[:5]}, '
                           f'unexpected {unexpected[:5]}')
    return twin.eval()


def without_adapters(model: nn.Module) -> nn.Module:
    """A copy of an adapter-only model whose backbone has no adapter left:
    the plain pre-trained ViT inside the same neck and heads."""
    dense = copy.deepcopy(model)
    for block in find_dyt_backbone(dense).blocks:
        block.mlp_adapter = None
    return dense
