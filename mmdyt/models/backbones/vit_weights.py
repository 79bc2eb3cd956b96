"""Weights of a DyTViT: reading ViT checkpoints, resampling the position
embedding, and adapter-only state dicts.

Everything that moves weights in or out of a :class:`DyTViT` is here:

- :func:`read_state_dict` reads a checkpoint file and fails early, naming
  the file, when it is damaged (:func:`check_checkpoint_file`).
- :func:`load_vit_checkpoint` loads a timm-format ViT (``blocks.N.attn.qkv``,
  ``blocks.N.mlp.fc1``, ...) and says what to do with other layouts
  (:func:`detect_layout`).
- :func:`resample_pos_embed` is the one resampling of position embeddings,
  used by the backbone's ``load_state_dict`` pre-hook (so every loader gets
  it), by its forward on other input sizes and by the adapter merge tool.
- Adapter-only state dicts (of DyTViT and DyTSwinTransformer) follow the
  PEFT pattern: with
  ``save_trainable_only`` a ``state_dict`` hook (:func:`strip_frozen_weights`)
  leaves the frozen weights out and records them in the state dict's
  metadata, and a load pre-hook (:func:`keep_frozen_weights`) completes such a
  state dict with the model's own frozen weights. No hook reads a file: the
  frozen weights come from ``init_weights()`` (the backbone's ``Pretrained``
  ``init_cfg``), which training runs before resuming and ``tools/test.py``
  runs before loading an adapter-only checkpoint.

The adapter-only metadata (the backbone's entry of ``_metadata``, kept by
``torch.save`` and mmengine) holds ``trainable_only``, ``base_checkpoint`` /
``base_prefix`` (the ``init_cfg`` the frozen weights came from),
``frozen_keys`` (name -> shape), ``patch_grid`` / ``num_prefix_tokens`` (to
resample the base's position embedding) and ``base_fingerprint`` (to tell
another base from the right one).
"""
import os.path as osp
import re
import zipfile
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from torch import Tensor

#: Keys under which checkpoints commonly nest their state dict.
STATE_DICT_KEYS = ('state_dict', 'model', 'module')
#: Prefixes of whole-model checkpoints under which the ViT sits.
BACKBONE_PREFIXES = ('backbone.', 'encoder.')
#: Names of the parameters that DyT adds to a pre-trained ViT (dispatchers,
#: adapters and the optional relative position biases): they train.
DYT_PARAM_KEYWORDS = ('_dispatcher.', '_adapter.', 'rel_pos_bias.',
                      'attn.rel_pos_')
#: Relative tolerance of the base fingerprint (float64 sums of the same
#: float32 weights differ only by summation order).
FINGERPRINT_RTOL = 1e-6


def is_dyt_param(name: str) -> bool:
    """Whether parameter ``name`` belongs to a dispatcher, an adapter or a
    relative position bias (what DyT adds and trains)."""
    return any(key in name for key in DYT_PARAM_KEYWORDS)


# ------------------------------------------------------------ reading files
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


def with_prefix_removed(state_dict: Dict[str, Tensor],
                        prefix: str) -> Dict[str, Tensor]:
    """The entries of ``state_dict`` under ``prefix``, without it."""
    pattern = re.compile('^' + re.escape(prefix))
    return OrderedDict((pattern.sub('', k), v) for k, v in state_dict.items()
                       if k.startswith(prefix))


# ------------------------------------------------------------------ layouts
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


def _layout_hint(state_dict: Dict[str, Tensor],
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


# ------------------------------------------------------- position embedding
def resample_pos_embed(pos_embed: Tensor,
                       new_grid: Tuple[int, int],
                       num_prefix_tokens: int,
                       old_grid: Optional[Tuple[int, int]] = None) -> Tensor:
    """Resample a ``(1, prefix + h*w, C)`` position embedding to
    ``new_grid``; the prefix (cls) entries are kept as they are.

    The patch entries are interpolated as a ``C``-channel image with
    ``F.interpolate(mode='bicubic', align_corners=False)`` and no
    anti-aliasing, as the authors' public release (and BEiT / mmseg) do for
    ViT checkpoints; timm's ``resample_abs_pos_embed`` anti-aliases by
    default, which changes the cubic kernel even when upsampling. This is
    the one resampling of mmdyt: loading (every loader), other input sizes
    at run time, and the adapter merge tool use it.

    Args:
        pos_embed (Tensor): The table.
        new_grid (tuple[int, int]): The patch grid (rows, columns) to
            resample to.
        num_prefix_tokens (int): Leading entries that are not on the grid.
        old_grid (tuple[int, int], optional): The table's grid; by default
            the square its patch entries make.

    Raises:
        ValueError: If the table's patch entries are not on ``old_grid``
            (a square grid by default).
    """
    num_patches = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(round(num_patches**0.5))
        old_grid = (side, side)
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if pos_embed.dim() != 3 or old_grid[0] * old_grid[1] != num_patches:
        raise ValueError(
            f'cannot resample a position embedding of shape '
            f'{tuple(pos_embed.shape)} to a {new_grid[0]}x{new_grid[1]} '
            f'grid: expected (1, prefix + {old_grid[0]}*{old_grid[1]}, '
            'embed_dims)')
    if old_grid == new_grid:
        return pos_embed
    prefix, patches = pos_embed.split([num_prefix_tokens, num_patches], 1)
    channels = pos_embed.shape[2]
    grid = patches.reshape(1, *old_grid, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_grid, mode='bicubic',
                         align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(
        pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


def has_cls_entry(pos_embed: Tensor) -> bool:
    """Whether a ``(1, L, C)`` position embedding is one entry longer than
    a square patch grid: the cls token's entry first."""
    num = pos_embed.shape[1]
    return round(num**0.5)**2 != num and round((num - 1)**0.5)**2 == num - 1


# ------------------------------------------------------ loading a timm ViT
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


# ------------------------------------------------- adapter-only state dicts
def fingerprint(tensors: Iterable[Tensor]) -> List[float]:
    """``[sum |w|, sum w^2]`` over ``tensors`` in float64: a cheap signature
    of a set of weights."""
    abs_sum = sq_sum = 0.
    for tensor in tensors:
        tensor = tensor.detach().double()
        abs_sum += float(tensor.abs().sum())
        sq_sum += float(tensor.square().sum())
    return [abs_sum, sq_sum]


def base_fingerprint(weights: Dict[str, Tensor],
                     names: Iterable[str]) -> List[float]:
    """:func:`fingerprint` of the frozen weights ``names`` of ``weights``,
    without the position embedding (resampled on loading, so it may differ
    by interpolation details between library versions)."""
    return fingerprint(weights[n] for n in names if n != 'pos_embed')


def fingerprints_match(recorded: List[float], actual: List[float]) -> bool:
    """Whether two :func:`fingerprint` results agree within
    :data:`FINGERPRINT_RTOL`."""
    return all(
        abs(a - b) <= FINGERPRINT_RTOL * max(abs(a), abs(b), 1e-12)
        for a, b in zip(recorded, actual))


def frozen_names(module: nn.Module) -> List[str]:
    """Names of the parameters of ``module`` that do not train."""
    return [n for n, p in module.named_parameters() if not p.requires_grad]


def adapter_only_entries(state_dict: dict) -> Dict[str, dict]:
    """The metadata of every module saved adapter-only, by module prefix
    (``'backbone'`` for a segmentor)."""
    metadata = getattr(state_dict, '_metadata', None) or {}
    return {
        name: meta
        for name, meta in metadata.items()
        if isinstance(meta, dict) and meta.get('trainable_only')
    }


def strip_frozen_weights(module: nn.Module, state_dict: dict, prefix: str,
                         local_metadata: dict) -> None:
    """``state_dict`` hook of a DyT backbone (DyTViT, DyTSwinTransformer)
    with ``save_trainable_only``: drop the frozen weights and record them in
    ``local_metadata``."""
    if not getattr(module, 'save_trainable_only', False):
        return
    shapes = OrderedDict()
    for name in frozen_names(module):
        tensor = state_dict.pop(prefix + name, None)
        if tensor is not None:
            shapes[name] = list(tensor.shape)
    init_cfg = module.init_cfg if isinstance(module.init_cfg, dict) else {}
    local_metadata.update(
        trainable_only=True,
        base_checkpoint=init_cfg.get('checkpoint'),
        base_prefix=init_cfg.get('prefix'),
        frozen_keys=dict(shapes),
        base_arch=_base_name(module),
        base_fingerprint=base_fingerprint(
            dict(module.named_parameters()), shapes))
    if hasattr(module, 'patch_grid'):  # a ViT's position embedding grid
        local_metadata.update(
            patch_grid=list(module.patch_grid),
            num_prefix_tokens=module.num_prefix_tokens)


def _base_name(module: nn.Module) -> str:
    """What the frozen network of a DyT backbone is (``'ViT'``,
    ``'Swin'``), for messages and the adapter-only metadata."""
    return getattr(module, 'BASE_NAME', 'ViT')


def keep_frozen_weights(module: nn.Module, state_dict: dict, prefix: str,
                        local_metadata: dict,
                        is_trainable_name: Callable[[str], bool]) -> None:
    """``load_state_dict`` pre-hook of a DyT backbone (DyTViT,
    DyTSwinTransformer): complete an adapter-only state dict with the
    model's own frozen weights.

    An adapter-only state dict is one marked ``trainable_only`` in its
    metadata, or (metadata lost) one with DyT parameters and none of the
    pre-trained weights. Its missing frozen weights are the model's, which
    must hold the base the adapters were trained on: ``init_weights()``
    loads it from the ``Pretrained`` ``init_cfg``. Other state dicts pass
    unchanged (a full load marks the model as holding its weights).

    Args:
        module (nn.Module): The backbone (``_pretrained_loaded`` tells
            whether it holds a full set of pre-trained weights).
        state_dict (dict): The state dict being loaded (modified in place).
        prefix (str): The module's prefix in ``state_dict``.
        local_metadata (dict): The module's metadata in ``state_dict``.
        is_trainable_name (Callable[[str], bool]): Whether a parameter name
            is a DyT (adapter or dispatcher) parameter.

    Raises:
        ValueError: If the frozen weights are needed but the model holds
            none yet, or holds another base than the adapters were trained
            on.
    """
    params = dict(module.named_parameters())
    pretrained = [n for n in params if not is_trainable_name(n)]
    present = [n for n in params if prefix + n in state_dict]
    if all(n in present for n in pretrained):
        module._pretrained_loaded = True  # a full load
        return
    recorded = local_metadata.get('frozen_keys')
    if local_metadata.get('trainable_only') and recorded is not None:
        missing = [n for n in recorded if prefix + n not in state_dict]
    elif any(is_trainable_name(n) for n in present) and not any(
            n in present for n in pretrained):
        missing = pretrained  # adapter-only, metadata lost
    else:
        return  # an ordinary partial state dict: the loader reports it
    if not missing:
        return
    base = local_metadata.get('base_checkpoint')
    kind, cls = _base_name(module), type(module).__name__
    if not module._pretrained_loaded:
        has_init_cfg = isinstance(module.init_cfg, dict) and \
            module.init_cfg.get('type') == 'Pretrained'
        raise ValueError(
            f'this is an adapter-only checkpoint: its {len(missing)} '
            f'frozen {kind} weights come from the base checkpoint {base!r}, '
            f'but this {cls} does not hold them yet. ' +
            ('Call init_weights() on the model (it loads init_cfg\'s '
             'checkpoint) before loading the adapters (tools/test.py does), '
             if has_init_cfg else
             "Give the backbone init_cfg=dict(type='Pretrained', "
             'checkpoint=BASE) and call init_weights() before loading, ') +
            'or merge base and adapters into one checkpoint with '
            'tools/model_converters/merge_adapter_checkpoint.py.')
    unknown = [n for n in (recorded or missing) if n not in params]
    if unknown:
        raise ValueError(
            f'the adapter-only checkpoint left out weights this {cls} does '
            f'not have: {unknown[:5]} (another architecture?)')
    recorded_fp = local_metadata.get('base_fingerprint')
    if recorded_fp is not None and not fingerprints_match(
            recorded_fp, base_fingerprint(params, recorded or missing)):
        current = (module.init_cfg or {}).get('checkpoint') if isinstance(
            module.init_cfg, dict) else None
        raise ValueError(
            f'the adapter-only checkpoint was trained on other frozen {kind} '
            f'weights than this model has: base checkpoint {base!r} when '
            f'saved, {current!r} (init_cfg) now, and the weights differ '
            '(fingerprint). Load the base the adapters were trained with.')
    for name in missing:
        state_dict[prefix + name] = params[name].detach()
    print_log(
        f'Adapter-only checkpoint: {len(missing)} frozen {kind} weights taken '
        f'from the base checkpoint ({base or "init_cfg"}).',
        logger='current')
