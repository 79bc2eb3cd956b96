from .dispatch_stats_hook import DispatchStatsHook
from .iter_seed_hook import IterSeedHook, iteration_seed
from .parameter_count_hook import ParameterCountHook, count_parameters

__all__ = [
    'DispatchStatsHook', 'IterSeedHook', 'iteration_seed',
    'ParameterCountHook', 'count_parameters'
]
