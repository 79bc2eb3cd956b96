"""IterSeedHook: the random numbers of an iteration depend on the run's
seed, the rank and the iteration only (the end-to-end check, a resumed run
ending with the uninterrupted run's weights, is in test_seg_demo.py and
test_video_demo.py)."""
from types import SimpleNamespace

import torch

from mmdyt.engine import IterSeedHook, iteration_seed


def draws(hook, seed, iteration):
    torch.rand(5)  # whatever came before is irrelevant
    hook.before_train_iter(SimpleNamespace(seed=seed, iter=iteration), 0)
    return torch.rand(3)


def test_draws_depend_on_seed_and_iteration_only():
    hook = IterSeedHook()
    assert torch.equal(draws(hook, 0, 7), draws(hook, 0, 7))
    assert not torch.equal(draws(hook, 0, 7), draws(hook, 0, 8))
    assert not torch.equal(draws(hook, 0, 7), draws(hook, 1, 7))
    assert torch.equal(draws(hook, None, 3), draws(hook, 0, 3))


def test_seeds_are_distinct_across_ranks_and_iterations():
    seeds = {iteration_seed(s, r, i)
             for s in (0, 1, 2**31) for r in range(8) for i in range(1000)}
    assert len(seeds) == 3 * 8 * 1000
    assert all(0 <= s < 2**63 for s in seeds)
