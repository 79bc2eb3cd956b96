"""What ``tools/train.py`` and ``tools/test.py`` share: reading the config
and building the runner, distributed runs on CPUs included."""
import datetime
import os
import os.path as osp
import subprocess
from typing import Any, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdyt.registry import LIBRARIES

#: Libraries whose configs mmdyt's tools run, by ``default_scope``.
SUPPORTED_SCOPES = tuple(LIBRARIES)


def load_config(path: str,
                cfg_options: Optional[dict] = None,
                work_dir: Optional[str] = None) -> Config:
    """Read a config, apply ``--cfg-options`` and set ``work_dir``.

    The config's ``default_scope`` (``'mmseg'``, ``'mmaction'`` or
    ``'mmdet'``) decides
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
            "segmentation, 'mmaction' for video, 'mmdet' for detection)")
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config):
    """Build the config's runner (``runner_type`` if set, else ``Runner``).

    Distributed runs without GPUs are prepared first
    (:func:`setup_cpu_distributed`).
    """
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


#: Model wrapper used when the config sets none (mmengine's default wrapper).
DEFAULT_WRAPPER = 'MMDistributedDataParallel'


def _replace_sync_bn(cfg: Any) -> int:
    """Turn every ``type='SyncBN'`` of a config into ``'BN'``, in place.

    Returns:
        int: The number of replacements.
    """
    count = 0
    if isinstance(cfg, dict):
        if cfg.get('type') == 'SyncBN':
            cfg['type'] = 'BN'
            count += 1
        for value in cfg.values():
            count += _replace_sync_bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            count += _replace_sync_bn(value)
    return count


def setup_cpu_distributed(cfg: Config) -> bool:
    """Let ``--launcher pytorch`` and ``--launcher slurm`` run on CPUs: gloo,
    CPU DDP, no SyncBN.

    mmengine 0.10.7 assumes GPUs for distributed runs: its ``init_dist`` calls
    ``torch.cuda.set_device`` and its default DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``, both of which fail without CUDA; PyTorch's
    SyncBatchNorm only runs on GPUs. When the config asks for a launcher and
    no GPU is visible, this

    - switches ``env_cfg.dist_cfg.backend`` to ``'gloo'`` (nccl needs GPUs),
    - initialises the process group itself from the ``torchrun`` environment
      (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), or for
      slurm from srun's (:func:`slurm_to_torch_env`), so that the runner
      finds it initialised and skips ``init_dist``,
    - sets ``model_wrapper_cfg.device_ids=None`` (CPU DDP), and
    - turns SyncBN layers into BN (per-process batch statistics) and drops
      ``sync_bn``, logging both.

    With GPUs, or without a launcher, it does nothing: mmengine sets up
    ``pytorch`` and ``slurm`` runs itself.

    Args:
        cfg (Config): The config; ``cfg.launcher`` is the tool's
            ``--launcher``. Modified in place.

    Returns:
        bool: Whether the config was prepared for CPU distribution.

    Raises:
        ValueError: For the ``mpi`` launcher (mmengine's set-up needs GPUs):
            launch with ``torchrun`` or srun instead.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(
            f'--launcher {launcher} needs GPUs (mmengine sets devices per '
            'GPU); without GPUs start the processes with torchrun '
            '(tools/dist_train.sh, also across nodes with NNODES, NODE_RANK '
            'and MASTER_ADDR) and --launcher pytorch, or with srun '
            '(tools/slurm_train.sh) and --launcher slurm')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print_log(
            f"No GPU: using the 'gloo' backend instead of "
            f"{dist_cfg.get('backend', 'nccl')!r}.",
            logger='current')
        dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    if not torch_dist.is_initialized():
        kwargs = {k: v for k, v in dist_cfg.items()
                  if k not in ('backend', 'port')}
        if launcher == 'slurm':
            slurm_to_torch_env(dist_cfg.get('port'))
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)

    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type=DEFAULT_WRAPPER,
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False)))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper

    replaced = _replace_sync_bn(cfg.model)
    if cfg.get('sync_bn') is not None:
        cfg.sync_bn = None
        replaced += 1
    if replaced:
        print_log(
            'No GPU: SyncBN needs GPUs; using BN (per-process batch '
            'statistics) instead.',
            logger='current')
    return True


def slurm_to_torch_env(port: Optional[int] = None) -> None:
    """Set torch.distributed's environment from srun's, as mmengine's slurm
    set-up does (without its GPU device selection).

    ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` come from ``SLURM_PROCID``,
    ``SLURM_NTASKS`` and ``SLURM_LOCALID``; ``MASTER_ADDR`` (unless set) is
    the first host of ``SLURM_NODELIST`` (``scontrol show hostname``);
    ``MASTER_PORT`` is ``port``, else the environment's, else 29500.

    Args:
        port (int, optional): The master port (``env_cfg.dist_cfg.port``).

    Raises:
        RuntimeError: If a slurm variable is missing (not started by srun)
            or the first host cannot be resolved.
    """
    missing = [name for name in ('SLURM_PROCID', 'SLURM_NTASKS',
                                 'SLURM_NODELIST') if name not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher slurm: {", ".join(missing)} not set; start the job '
            'with srun (tools/slurm_train.sh, tools/slurm_test.sh)')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        result = subprocess.run(['scontrol', 'show', 'hostname', nodes],
                                capture_output=True, text=True)
        hosts = result.stdout.split()
        if result.returncode != 0 or not hosts:
            raise RuntimeError(
                f'--launcher slurm: `scontrol show hostname {nodes}` gave no '
                f'host ({result.stderr.strip()}); set MASTER_ADDR')
        os.environ['MASTER_ADDR'] = hosts[0]
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def finish_distributed() -> None:
    """Destroy the default process group of a distributed run, if any,
    before the process exits (PyTorch's advice: a group left to the
    interpreter's teardown can abort a process that has already finished
    its work)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
