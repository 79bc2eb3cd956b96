"""Reading ViT checkpoints into DyTViT, with errors that say what is wrong."""
import os.path as osp
import zipfile
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

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


def read_state_dict(filename: str) -> Dict[str, torch.Tensor]:
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
    checkpoint = read_checkpoint(filename)
    state_dict = checkpoint
    while isinstance(state_dict, dict):
        nested = [k for k in STATE_DICT_KEYS if isinstance(
            state_dict.get(k), dict)]
        if not nested:
            break
        state_dict = state_dict[nested[0]]
    if not isinstance(state_dict, dict) or not any(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f'checkpoint {filename} holds no state dict of '
                         'tensors')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def _layout_hint(state_dict: Dict[str, torch.Tensor],
                 filename: str,
                 known_only: bool = False) -> str:
    """What to do with a checkpoint of another layout (empty if the layout
    is unknown and ``known_only``)."""
    from .ckpt_convert import detect_format, strip_backbone_prefix
    layout = detect_format(strip_backbone_prefix(state_dict)[0])
    if layout == 'timm' and not known_only:
        return ("It holds a timm ViT under a prefix: set init_cfg's prefix "
                "(e.g. prefix='backbone.')")
    if layout not in (None, 'timm'):
        return (f'It looks like a {layout} checkpoint: convert it with '
                f'`python tools/convert_checkpoint.py {filename} OUT.pth`')
    if known_only:
        return ''
    return ('Convert mmseg, mmpretrain, MAE and VideoMAE checkpoints with '
            'tools/convert_checkpoint.py')


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
    from mmdyt.models.backbones.dyt_vit import is_dyt_param
    state_dict = read_state_dict(filename)
    if prefix:
        state_dict = {
            k[len(prefix):]: v
            for k, v in state_dict.items() if k.startswith(prefix)
        }
        if not state_dict:
            raise ValueError(
                f'checkpoint {filename} has no keys under prefix {prefix!r}')
    from .adapter_checkpoint import full_state_dict
    own = full_state_dict(model)
    pretrained = [k for k in own if not is_dyt_param(k)]
    if not set(pretrained) & set(state_dict):
        raise ValueError(
            f'checkpoint {filename} is not a timm-format ViT: none of its '
            f'keys (e.g. {sorted(state_dict)[:3]}) is a DyTViT weight (e.g. '
            f'{pretrained[:3]}). {_layout_hint(state_dict, filename)}.')
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
        hint = _layout_hint(state_dict, filename, known_only=True)
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
