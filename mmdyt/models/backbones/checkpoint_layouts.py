"""Checkpoint layouts of ViTs: taking the ViT out of a whole-model
checkpoint and telling timm's layout (which :class:`DyTViT` loads as it is)
from the others that ``tools/model_converters/convert_checkpoint.py``
converts (mmseg, mmpretrain, MAE, VideoMAE)."""
import re
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from torch import Tensor

__all__ = [
    'BACKBONE_PREFIXES', 'with_prefix_removed', 'strip_backbone_prefix',
    'detect_layout', 'layout_hint'
]

#: Prefixes of whole-model checkpoints under which the ViT sits.
BACKBONE_PREFIXES = ('backbone.', 'encoder.')


def with_prefix_removed(state_dict: Dict[str, Tensor],
                        prefix: str) -> Dict[str, Tensor]:
    """The entries of ``state_dict`` under ``prefix``, without it."""
    pattern = re.compile('^' + re.escape(prefix))
    return OrderedDict((pattern.sub('', k), v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def strip_backbone_prefix(
        state_dict: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict]:
    """Take the ViT out of a whole-model checkpoint (``backbone.*`` of a
    segmentor, recognizer or classifier; ``encoder.*`` of a VideoMAE
    pre-training checkpoint).

    Returns:
        tuple: The ViT's weights without the prefix, and the dropped keys
        with the reason.
    """
    for prefix in BACKBONE_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            dropped = {
                k: f'outside the {prefix[:-1]}'
                for k in state_dict if not k.startswith(prefix)
            }
            return with_prefix_removed(state_dict, prefix), dropped
    return dict(state_dict), {}


def detect_layout(state_dict: Dict[str, Tensor]) -> Optional[str]:
    """Guess the layout of a ViT state dict (backbone prefix removed).

    Returns:
        str | None: ``'mmseg-vit'``, ``'mmpretrain-vit'``, ``'mmseg-mae'``,
        ``'mae'``, ``'videomae'`` (layouts that
        ``tools/model_converters/convert_checkpoint.py`` converts),
        ``'timm'`` for a checkpoint DyTViT loads as it is, or None if
        unknown.
    """
    keys = set(state_dict)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, k) for k in keys)

    if has(r'^layers\.\d+\.attn\.attn\.in_proj_weight$'):
        return 'mmseg-vit'
    if has(r'^layers\.\d+\.attn\.qkv\.weight$'):
        if has(r'^layers\.\d+\.(gamma_1|attn\.relative_position|'
               r'attn\.q_bias)'):
            return 'mmseg-mae'
        return 'mmpretrain-vit'
    if has(r'^blocks\.\d+\.mlp\.layers\.0\.0\.weight$'):
        return 'videomae'
    if has(r'^blocks\.\d+\.mlp\.fc1\.weight$'):
        return 'mae' if has(r'^(decoder_|mask_token)') else 'timm'
    return None


def layout_hint(state_dict: Dict[str, Tensor],
                filename: str,
                known_only: bool = False) -> str:
    """What to do with a checkpoint of another layout (empty if the layout
    is unknown and ``known_only``)."""
    layout = detect_layout(strip_backbone_prefix(state_dict)[0])
    if layout == 'timm' and not known_only:
        return ("It holds a timm ViT under a prefix: set init_cfg's prefix "
                "(e.g. prefix='backbone.')")
    if layout not in (None, 'timm'):
        return (f'It looks like a {layout} checkpoint: convert it with '
                '`python tools/model_converters/convert_checkpoint.py '
                f'{filename} OUT.pth`')
    if known_only:
        return ''
    return ('Convert mmseg, mmpretrain, MAE and VideoMAE checkpoints with '
            'tools/model_converters/convert_checkpoint.py')
