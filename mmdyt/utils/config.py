"""Config handling shared by the command-line tools."""
import os.path as osp
from typing import Optional

from mmengine.config import Config

#: Libraries whose configs mmdyt's tools run, by ``default_scope``.
SUPPORTED_SCOPES = ('mmseg', 'mmaction')


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None) -> Config:
    """Read a config, apply ``--cfg-options`` and set ``work_dir``.

    The config's ``default_scope`` (``'mmseg'`` or ``'mmaction'``) decides
    which library's registries build everything.

    Args:
        path (str): The config file.
        cfg_options (dict, optional): Overrides, as ``--cfg-options`` gives.
        work_dir (str, optional): Work directory; defaults to the config's
            ``work_dir`` or ``./work_dirs/<config name>``.

    Raises:
        FileNotFoundError: If the config does not exist.
        ValueError: If its ``default_scope`` is not a supported library.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(
            f'{path}: default_scope is {scope!r}; mmdyt runs configs of '
            f"{SUPPORTED_SCOPES} (set default_scope = 'mmseg' for "
            "segmentation, 'mmaction' for video)")
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config):
    """Build the config's runner (``runner_type`` if set, else ``Runner``).

    Distributed runs without GPUs are prepared first
    (:func:`~mmdyt.utils.distributed.setup_cpu_distributed`).
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .distributed import setup_cpu_distributed
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
