"""The set of backbones one benchmark times (:class:`BenchmarkModels`)."""
from dataclasses import dataclass, field
from typing import Dict

import torch
import torch.nn as nn

from mmdyt.models import DyTViT
from mmdyt_tools.benchmark.peers import (AutocastPeer, IdealSliceDyT,
                                         ReferenceGatherDyT,
                                         autocast_only_copy,
                                         compile_for_benchmark,
                                         low_precision_copy, prepacked_copy)

#: Names of the benchmarked models, in table order. ``dense_again`` is the
#: dense model timed a second time: the noise control (its ratio to
#: ``dense`` should be 1 within the interval).
MODEL_NAMES = ('dense', 'dense_again', 'adapter', 'dyt', 'reference',
               'ideal')


@dataclass
class BenchmarkModels:
    """The benchmarked backbones (eval mode, same weights)."""
    dense: nn.Module
    adapter: DyTViT
    dyt: DyTViT
    reference: ReferenceGatherDyT
    ideal: IdealSliceDyT
    compiled: Dict[str, nn.Module] = field(default_factory=dict)
    prepacked: Dict[str, nn.Module] = field(default_factory=dict)
    bf16: Dict[str, nn.Module] = field(default_factory=dict)

    @property
    def dense_again(self) -> nn.Module:
        """The dense model, timed a second time (noise control)."""
        return self.dense

    def compile(self, backend: str = 'inductor') -> None:
        """(Re)compile the dense model and DyT: call it again after
        ``torch.set_num_threads``, after ``peers.reset_compiled``.

        Args:
            backend (str): The ``torch.compile`` backend.
                Defaults to ``'inductor'``.
        """
        self.compiled = dict(
            dense_compiled=compile_for_benchmark(self.dense, backend),
            dyt_compiled=compile_for_benchmark(self.dyt, backend))

    def prepack(self) -> None:
        """Add the dense model and DyT with pre-packed weights (sharing
        their parameters, ``peers.prepacked_copy``)."""
        self.prepacked = dict(dense_prepacked=prepacked_copy(self.dense),
                              dyt_prepacked=prepacked_copy(self.dyt))

    def to(self, device: str) -> None:
        """Move the models to ``device`` (before adding peers: they share
        the models' tensors)."""
        for model in (self.dense, self.adapter, self.dyt):
            model.to(device)

    def add_bf16(self, dtype: torch.dtype = torch.bfloat16) -> None:
        """Add the low-precision peers (``peers.py``), all under autocast
        in ``dtype``: DyT, the dense model and the ideal slice with
        low-precision weight copies, and the dense model and DyT under
        autocast alone.

        Args:
            dtype (torch.dtype): The autocast dtype. Defaults to
                ``torch.bfloat16``.
        """
        self.bf16 = dict(
            dense_bf16=AutocastPeer(low_precision_copy(self.dense), dtype),
            dyt_bf16=AutocastPeer(self.dyt, dtype),
            ideal_bf16=AutocastPeer(self.ideal, dtype),
            dense_bf16_amp=AutocastPeer(self.dense, dtype),
            dyt_bf16_amp=AutocastPeer(autocast_only_copy(self.dyt), dtype))

    def compile_bf16(self, backend: str = 'inductor') -> None:
        """Add the dense model and DyT compiled under autocast in the dtype
        of :meth:`add_bf16`, which must run first (call it again after
        ``peers.reset_compiled``)."""
        dtype = self.bf16['dyt_bf16'].dtype
        self.bf16.update(
            dense_bf16_compiled=compile_for_benchmark(
                AutocastPeer(self.dense, dtype), backend),
            dyt_bf16_compiled=compile_for_benchmark(
                AutocastPeer(self.dyt, dtype), backend))

    def peers(self) -> Dict[str, nn.Module]:
        """The compiled, pre-packed and bfloat16 peers, by name."""
        return dict(self.compiled, **self.prepacked, **self.bf16)

    def as_dict(self) -> Dict[str, nn.Module]:
        return dict({name: getattr(self, name)
                     for name in MODEL_NAMES}, **self.peers())
