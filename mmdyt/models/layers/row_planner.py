"""Row-aware matmuls: how many pieces to split a matmul's rows into, chosen
from timings taken on the machine the model runs on.

A matmul's time is not proportional to its rows. On a CPU, oneDNN's
bfloat16 kernels split a matmul's work between the threads by blocks of
rows and columns, and at some row counts that split leaves threads idle, so
that one call takes longer than the same rows in two or three calls.
DyT's gathered MLP multiplies whatever number of tokens its dispatchers
keep, so it lands on such counts. Where the slow counts lie moves with the
CPU, the thread count and the shape, so they are measured rather than
written down: like ``torch.backends.cudnn.benchmark``, the first matmul of
a shape at a new row count times the candidates (one call, or 2, 3 or 4
equal pieces, the outputs joined as in use) on zeros of that shape and
keeps the fastest; later calls of that shape and row count reuse the
choice. Choices are kept per row bucket (rows rounded up to
:attr:`RowPlanner.granularity`), so that a few dozen measurements cover
every token count of a model; the first forwards of a model pay for them
(a few ms per bucket and shape). :meth:`RowPlanner.timings` shows what was
measured.

The choice changes only how the rows are grouped into calls: each output
row is computed by the same kernel from the same row and weight, so results
do not depend on it beyond the kernel's own rounding.
"""
import threading
import time
from typing import Callable, Dict, Hashable, Tuple

import torch

#: A matmul's identity for the planner: anything hashable that fixes its
#: cost at a given row count (its weight's shape, dtype and layout).
ShapeKey = Hashable


class RowPlanner:
    """Chooses, per matmul shape and row count, how many equal pieces to run
    the rows in, from timings taken once and cached (see the module's
    docstring).

    Args:
        granularity (int): Row counts are rounded up to a multiple of this
            for the timings. Defaults to 32.
        max_pieces (int): The most pieces a matmul is split into.
            Defaults to 4.
        min_gain (float): A split is chosen only if its measured time is at
            most ``1 - min_gain`` of one call's, so that timing noise does
            not split matmuls for nothing. Defaults to 0.1.
        repeats (int): Timed calls per candidate (the fastest counts, the
            one least disturbed by other work); one more untimed call runs
            first. Defaults to 3.
    """

    def __init__(self,
                 granularity: int = 32,
                 max_pieces: int = 4,
                 min_gain: float = 0.1,
                 repeats: int = 3):
        if granularity < 1 or max_pieces < 1 or repeats < 1 or \
                not 0 <= min_gain < 1:
            raise ValueError(
                'granularity, max_pieces and repeats must be positive and '
                f'min_gain in [0, 1), got {granularity}, {max_pieces}, '
                f'{repeats} and {min_gain}')
        self.granularity = granularity
        self.max_pieces = max_pieces
        self.min_gain = min_gain
        self.repeats = repeats
        self.enabled = True
        # ((shape key, threads), row bucket) -> {pieces: ms}, and
        # (shape key, threads) -> {row bucket: pieces}
        self._times: Dict[tuple, Dict[int, float]] = {}
        self._plans: Dict[tuple, Dict[int, int]] = {}
        self._lock = threading.Lock()

    def _bucket(self, rows: int) -> int:
        step = self.granularity
        return -(-rows // step) * step

    def pieces(self, key: ShapeKey, rows: int,
               run: Callable[[int, int], object]) -> int:
        """The number of equal pieces to run ``rows`` rows of matmul
        ``key`` in.

        Args:
            key (Hashable): The matmul's shape key (:data:`ShapeKey`).
            rows (int): Its row count.
            run (Callable[[int, int], object]): ``run(rows, pieces)`` runs
                the matmul on zeros of ``rows`` rows in ``pieces`` pieces,
                output assembled as in use; called to time a row count not
                measured before.

        Returns:
            int: 1 (one call) to :attr:`max_pieces`.
        """
        if not self.enabled or rows < 2 * self.granularity:
            return 1
        state = (key, torch.get_num_threads())
        bucket = self._bucket(rows)
        plans = self._plans.get(state)
        if plans is not None and bucket in plans:
            return plans[bucket]
        with self._lock:
            costs = {
                n: self._time(run, bucket, n)
                for n in range(1, self.max_pieces + 1)
                if bucket // n >= self.granularity
            }
            best = min(costs, key=costs.get)
            if costs[best] > (1 - self.min_gain) * costs[1]:
                best = 1
            self._times[(state, bucket)] = costs
            self._plans.setdefault(state, {})[bucket] = best
        return best

    def _time(self, run: Callable[[int, int], object], rows: int,
              pieces: int) -> float:
        """The fastest of :attr:`repeats` timed calls (ms): the least
        disturbed by other work on a shared machine."""
        run(rows, pieces)  # untimed: first-call costs (allocation, setup)
        times = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            run(rows, pieces)
            times.append(time.perf_counter() - start)
        return min(times) * 1e3

    def plans(self) -> Dict[tuple, Dict[int, int]]:
        """The choices made so far: ``{(shape key, threads): {row bucket:
        pieces}}`` (a copy)."""
        return {state: dict(plan) for state, plan in self._plans.items()}

    def timings(self) -> Dict[tuple, Dict[int, float]]:
        """The timings behind them: ``{((shape key, threads), row bucket):
        {pieces: ms}}`` (a copy)."""
        return {k: dict(v) for k, v in self._times.items()}

    def clear(self) -> None:
        """Forget every timing and choice (e.g. after the machine's load or
        the process's thread affinity changed)."""
        with self._lock:
            self._times.clear()
            self._plans.clear()


#: The process's planner, used by
#: :class:`~mmdyt.models.layers.prepacked_linear.PrepackedLinear` for its
#: low-precision CPU matmuls. ``ROW_PLANNER.enabled = False`` runs every
#: matmul as one call.
ROW_PLANNER = RowPlanner()


def split_rows(rows: int, pieces: int) -> Tuple[int, ...]:
    """The sizes of ``pieces`` near-equal pieces of ``rows`` rows, the larger
    ones first."""
    size, extra = divmod(rows, pieces)
    return tuple(size + (i < extra) for i in range(pieces))
