from .hooks import (DispatchStatsHook, IterSeedHook, ParameterCountHook,
                    count_parameters, iteration_seed)
from .optim_wrappers import AutocastOptimWrapper
from .rate_meter import RateMeter, find_dyt_backbone, unwrap_model

__all__ = [
    'AutocastOptimWrapper', 'DispatchStatsHook', 'IterSeedHook',
    'ParameterCountHook', 'RateMeter', 'count_parameters',
    'find_dyt_backbone', 'iteration_seed', 'unwrap_model'
]
