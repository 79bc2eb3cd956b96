"""Ratios of paired timings with bootstrap confidence intervals."""
import statistics
from typing import Dict, List, Sequence, Tuple

import torch


def bootstrap_ratio(numerator: Sequence[float],
                    denominator: Sequence[float],
                    resamples: int = 2000,
                    level: float = 0.95,
                    seed: int = 0) -> Tuple[float, float, float]:
    """``median(numerator) / median(denominator)`` of paired rounds, with a
    bootstrap confidence interval over the rounds.

    Round ``i`` timed both models (in a rotated order), so rounds are
    resampled as pairs: a slow phase of the machine that hit both stays
    paired.

    Args:
        numerator (Sequence[float]): Per-round times of one model.
        denominator (Sequence[float]): The other model's, same rounds.
        resamples (int): Bootstrap resamples. Defaults to 2000.
        level (float): Confidence level. Defaults to 0.95.
        seed (int): Seed of the resampling. Defaults to 0.

    Returns:
        tuple[float, float, float]: The ratio and the interval's bounds.
    """
    num = torch.tensor(numerator, dtype=torch.float64)
    den = torch.tensor(denominator, dtype=torch.float64)
    if num.shape != den.shape or num.numel() == 0:
        raise ValueError('need the same, non-zero number of rounds')
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, num.numel(), (resamples, num.numel()),
                          generator=generator)
    ratios = num[picks].median(dim=1).values / den[picks].median(
        dim=1).values
    tail = (1 - level) / 2
    low, high = torch.quantile(ratios, torch.tensor([tail, 1 - tail],
                                                    dtype=torch.float64))
    return (statistics.median(numerator) / statistics.median(denominator),
            float(low), float(high))


def ratio_fields(times: Dict[str, List[float]],
                 *specs: Tuple[str, str, str],
                 seed: int = 0) -> dict:
    """Row fields of time ratios: for each ``(key, num, den)`` of ``specs``,
    ``key``, the ratio of the medians ``times[num] / times[den]``, and
    ``key_ci``, its 95% bootstrap interval (:func:`bootstrap_ratio`), rounded
    to 4 digits.

    Args:
        times (dict[str, list[float]]): Per-round times by model name.
        *specs (tuple[str, str, str]): The field name, the model in the
            numerator and the one in the denominator, per ratio.
        seed (int): Seed of the resampling. Defaults to 0.
    """
    fields = {}
    for key, num, den in specs:
        value, low, high = bootstrap_ratio(times[num], times[den], seed=seed)
        fields[key] = round(value, 4)
        fields[f'{key}_ci'] = [round(low, 4), round(high, 4)]
    return fields
