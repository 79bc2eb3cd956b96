from .autocast_optim_wrapper import AutocastOptimWrapper
from .dispatch_stats_hook import (DispatchStatsHook, find_dyt_backbone,
                                  unwrap_model)
from .iter_seed_hook import IterSeedHook, iteration_seed
from .parameter_count_hook import ParameterCountHook, count_parameters

__all__ = [
    'AutocastOptimWrapper', 'DispatchStatsHook', 'ParameterCountHook',
    'count_parameters', 'find_dyt_backbone', 'IterSeedHook', 'iteration_seed',
    'unwrap_model'
]
