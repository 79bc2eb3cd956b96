"""Reading checkpoint files, and loading a timm-format ViT into a
:class:`DyTViT`.

This is the one module of mmdyt's models that reads checkpoint files:

- :func:`read_state_dict` reads a checkpoint file and fails early, naming
  the file, when it is damaged (:func:`check_checkpoint_file`).
- :func:`load_vit_checkpoint` loads a timm-format ViT (``blocks.N.attn.qkv``,
  ``blocks.N.mlp.fc1``, ...) and says what to do with other layouts
  (:mod:`.checkpoint_layouts`). Its position embedding is resampled by the
  backbone's ``load_state_dict`` pre-hook
  (:func:`~mmdyt.models.layers.pos_embed.resample_pos_embed`).

Adapter-only checkpoints (frozen weights left out) are
:mod:`.frozen_backbone`'s.
"""
import os.path as osp
import zipfile
from typing import Dict, Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from torch import Tensor

from .checkpoint_layouts import layout_hint, with_prefix_removed
from .frozen_backbone import is_dyt_param

__all__ = ['STATE_DICT_KEYS', 'check_checkpoint_file', 'read_checkpoint',
           'read_state_dict', 'load_vit_checkpoint']

#: Keys under which checkpoints commonly nest their state dict.
STATE_DICT_KEYS = ('state_dict', 'model', 'module')


def check_checkpoint_file(filename: str) -> None:
    """Fail early, naming the file, if a local checkpoint is damaged.

    ``torch.load`` reports a truncated file with an internal zip error and
    loads a file with flipped bytes silently (it does not check the CRCs
    that ``torch.save`` writes). This checks that the file exists, is not
    empty and, for the zip format of ``torch.save``, that the archive and
    the CRC of every member are intact (reading the file once); a file in
    the legacy format is read with :func:`read_checkpoint`. URLs are not
    checked.

    Args:
        filename (str): The checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is empty, truncated or corrupt.
    """
    if '://' in filename:
        return
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    if osp.getsize(filename) == 0:
        raise ValueError(f'checkpoint {filename} is empty (0 bytes): the '
                         'save or the copy was interrupted')
    if not zipfile.is_zipfile(filename):
        read_checkpoint(filename, check=False)
        return
    try:
        with zipfile.ZipFile(filename) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(
            f'checkpoint {filename} is corrupt or truncated '
            f'({type(error).__name__}: {error})') from error
    if damaged is not None:
        raise ValueError(
            f'checkpoint {filename} is corrupt: the data of {damaged} does '
            'not match its checksum (a damaged copy or disk?)')


def read_checkpoint(filename: str, check: bool = True) -> dict:
    """Read a checkpoint file (or URL) on the CPU, as it was saved.

    Args:
        filename (str): Path or URL of the checkpoint.
        check (bool): Check the file first (:func:`check_checkpoint_file`).
            Defaults to True.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file cannot be read as a checkpoint (empty,
            corrupt or truncated) or is not a dict.
    """
    if check:
        check_checkpoint_file(filename)
    try:
        checkpoint = CheckpointLoader.load_checkpoint(
            filename, map_location='cpu')
    except FileNotFoundError:
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f'cannot read checkpoint {filename}: it is corrupt, truncated or '
            f'not a PyTorch checkpoint ({type(error).__name__}: {error})'
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint {filename} holds a '
                         f'{type(checkpoint).__name__}, not a state dict')
    return checkpoint


def read_state_dict(filename: str) -> Dict[str, Tensor]:
    """Read the state dict of a checkpoint file (or URL) on the CPU.

    Nested state dicts (``state_dict``, ``model``, ``module``) and the
    ``module.`` prefix of DataParallel checkpoints are unwrapped.

    Args:
        filename (str): Path or URL of the checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file cannot be read as a checkpoint (corrupt or
            truncated) or holds no tensors.
    """
    state_dict = read_checkpoint(filename)
    while isinstance(state_dict, dict):
        nested = [k for k in STATE_DICT_KEYS if isinstance(
            state_dict.get(k), dict)]
        if not nested:
            break
        state_dict = state_dict[nested[0]]
    if not isinstance(state_dict, dict) or not any(
            isinstance(v, Tensor) for v in state_dict.values()):
        raise ValueError(f'checkpoint {filename} holds no state dict of '
                         'tensors')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = with_prefix_removed(state_dict, 'module.')
    return state_dict


def load_vit_checkpoint(model: nn.Module,
                        filename: str,
                        prefix: Optional[str] = None) -> None:
    """Load a timm-format ViT checkpoint into a :class:`DyTViT`.

    The checkpoint must provide every pre-trained weight of ``model`` with a
    fitting shape (the position embedding is resampled to the model's grid);
    dispatchers and adapters keep their initialisation unless the checkpoint
    has them too. Extra keys (a classifier head) are reported and ignored.

    Args:
        model (nn.Module): The DyTViT to load into.
        filename (str): Path or URL of the checkpoint.
        prefix (str, optional): Load only the keys under this prefix (e.g.
            ``'backbone.'`` for a whole segmentor's checkpoint), with the
            prefix removed. Defaults to None.

    Raises:
        ValueError: If the checkpoint is of another architecture, lacks
            pre-trained weights of the model, or has weights of other shapes.
    """
    state_dict = read_state_dict(filename)
    if prefix:
        state_dict = with_prefix_removed(state_dict, prefix)
        if not state_dict:
            raise ValueError(
                f'checkpoint {filename} has no keys under prefix {prefix!r}')
    own = dict(model.named_parameters())  # frozen ones included
    pretrained = [k for k in own if not is_dyt_param(k)]
    if not set(pretrained) & set(state_dict):
        raise ValueError(
            f'checkpoint {filename} is not a timm-format ViT: none of its '
            f'keys (e.g. {sorted(state_dict)[:3]}) is a DyTViT weight (e.g. '
            f'{pretrained[:3]}). {layout_hint(state_dict, filename)}.')
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items()
        if k in own and k != 'pos_embed' and v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(
            f'checkpoint {filename} does not fit this DyTViT (check arch, '
            f'patch_size and in_channels); {len(mismatched)} shapes differ: ' +
            '; '.join(mismatched[:5]))
    missing = [k for k in pretrained if k not in state_dict]
    if missing:
        hint = layout_hint(state_dict, filename, known_only=True)
        raise ValueError(
            f'checkpoint {filename} lacks {len(missing)} pre-trained weights '
            f'of this DyTViT, e.g. {missing[:5]} ' +
            (f'. {hint}.' if hint else
             '(check arch/num_layers, with_cls_token and final_norm)'))
    result = model.load_state_dict(state_dict, strict=False)
    message = (f'Loaded {len(state_dict) - len(result.unexpected_keys)} '
               f'tensors from {filename}')
    if result.unexpected_keys:
        message += (f'; ignored {len(result.unexpected_keys)} keys DyTViT '
                    f'does not have: {sorted(result.unexpected_keys)}')
    if result.missing_keys:
        message += (f'; {len(result.missing_keys)} DyT parameters (adapters, '
                    'dispatchers) keep their initialisation')
    print_log(message, logger='current')
