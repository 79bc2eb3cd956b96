"""IterSeedHook: per-iteration seeds, so that a resumed run continues exactly
where the uninterrupted one would have."""
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from mmdyt.registry import register

_MIX = 1_000_003  # a prime: (seed, rank, iteration) -> distinct seeds


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """The torch seed of training iteration ``iteration`` on ``rank``."""
    return ((seed * _MIX + rank) * _MIX + iteration) % (2**63)


@register('HOOKS')
class IterSeedHook(Hook):
    """Seeds torch's random number generators before every training
    iteration from the run's seed, the rank and the iteration.

    DyT's training draws random numbers in the model (the dispatchers'
    Gumbel noise, dropout, drop path). A checkpoint holds the weights, the
    optimizer and the iteration, not the generator's state, so a resumed run
    would draw other noise than the uninterrupted one from the first resumed
    iteration on. Seeding every iteration makes the noise of iteration ``i``
    depend on ``i`` alone: with mmengine's resume (which replays the sampler
    to the same position, and whose data workers are seeded the same way),
    an iteration-based run resumed at ``N`` continues exactly as the
    uninterrupted run (``tests/test_seg_demo.py``). Each rank gets its own
    noise. NumPy's and Python's generators (data augmentation in the main
    process) are left alone: mmengine's replay of the data already repeats
    what they draw.

    Args:
        priority (str): Runs before the other hooks of an iteration.
            Defaults to ``'VERY_HIGH'``.
    """

    def __init__(self, priority: str = 'VERY_HIGH'):
        self.priority = priority

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        seed = runner.seed if runner.seed is not None else 0
        torch.manual_seed(iteration_seed(seed, get_rank(), runner.iter))
