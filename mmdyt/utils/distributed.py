"""Distributed training and testing on machines without GPUs (gloo)."""
import datetime
from typing import Any

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

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
    """Let ``--launcher pytorch`` run on CPUs: gloo, CPU DDP, no SyncBN.

    mmengine 0.10.7 assumes GPUs for distributed runs: its ``init_dist`` calls
    ``torch.cuda.set_device`` and its default DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``, both of which fail without CUDA; PyTorch's
    SyncBatchNorm only runs on GPUs. When the config asks for a launcher and
    no GPU is visible, this

    - switches ``env_cfg.dist_cfg.backend`` to ``'gloo'`` (nccl needs GPUs),
    - initialises the process group itself from the ``torchrun`` environment
      (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so that
      the runner finds it initialised and skips ``init_dist``,
    - sets ``model_wrapper_cfg.device_ids=None`` (CPU DDP), and
    - turns SyncBN layers into BN (per-process batch statistics) and drops
      ``sync_bn``, logging both.

    With GPUs, or without a launcher, it does nothing.

    Args:
        cfg (Config): The config; ``cfg.launcher`` is the tool's
            ``--launcher``. Modified in place.

    Returns:
        bool: Whether the config was prepared for CPU distribution.

    Raises:
        ValueError: For launchers other than ``'pytorch'`` (mmengine's slurm
            and mpi set-ups need GPUs): launch with ``torchrun`` instead.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise ValueError(
            f'--launcher {launcher} needs GPUs (mmengine sets devices per '
            'GPU); without GPUs start the processes with torchrun '
            '(tools/dist_train.sh, also across nodes with NNODES, NODE_RANK '
            'and MASTER_ADDR) and --launcher pytorch')
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
        kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
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
