"""What every DyT backbone offers about its token dispatch, once.

:class:`DyTViT` and :class:`DyTSwinTransformer` both hold a flat sequence
``self.blocks`` of blocks with ``dispatch_sites`` and ``dispatchers()``
(:data:`~mmdyt.models.layers.dyt_block.DISPATCH_SITES` is the one definition of
which sites a block has). From it this mixin gives the backbone's dispatch
sites, dispatchers, mask hooks (statistics, dispatch maps), the threshold
knob and the activation rate, which the task models, the hooks, the FLOPs
model and the tools use without knowing which backbone it is.
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from mmdyt.utils.torch_compat import is_exporting

from ..layers.dispatcher import mean_rate


class DispatchAPIMixin:
    """Dispatch bookkeeping of a DyT backbone with blocks ``self.blocks``.

    Call :meth:`_init_dispatch_api` in the constructor and
    :meth:`_publish_masks` at the end of every forward.
    """

    def _init_dispatch_api(self) -> None:
        #: The masks of the last dynamic (not complete) forward.
        self.dispatch_masks: List[Tensor] = []
        self._mask_hooks: Dict[int, Callable] = OrderedDict()

    def _publish_masks(self, masks: List[Tensor], inputs: Tensor,
                       complete: bool) -> None:
        """Keep a dynamic forward's masks and call the mask hooks."""
        if complete:
            return
        if not is_exporting():  # no state in a graph
            self.dispatch_masks = masks
        for hook in self._mask_hooks.values():
            hook(masks, inputs)

    @property
    def dispatch_sites(self) -> List[Tuple[int, str]]:
        """``(block index, site)`` of every dispatcher, in mask order (each
        block's ``dispatch_sites``)."""
        return [(i, site) for i, block in enumerate(self.blocks)
                for site in block.dispatch_sites]

    @property
    def dispatch_site_strides(self) -> List[int]:
        """Per dispatch site (in mask order), the stride of its token grid
        over the first block's: 1 everywhere in a ViT; a Swin stage's
        patch merging multiplies it (each block's ``token_stride``)."""
        return [getattr(block, 'token_stride', 1) for block in self.blocks
                for _ in block.dispatch_sites]

    def dispatchers(self) -> List[nn.Module]:
        """All token dispatchers, in mask order."""
        return [d for block in self.blocks for d in block.dispatchers()]

    def register_mask_hook(
            self, hook: Callable[[List[Tensor], Tensor], None]
    ) -> RemovableHandle:
        """Call ``hook(masks, inputs)`` after every dynamic (not complete)
        forward, with that forward's masks (``forward_with_masks``) and its
        input tensor.

        Statistics (:class:`~mmdyt.engine.RateMeter`) use it instead of a
        forward hook, which cannot tell a complete forward from a dynamic
        one.

        Returns:
            RemovableHandle: ``handle.remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._mask_hooks)
        self._mask_hooks[handle.id] = hook
        return handle

    def set_dispatch_threshold(self, threshold: float) -> None:
        """Set the evaluation threshold of every dispatcher.

        A higher threshold activates fewer tokens: a cost/accuracy knob on a
        trained model, without retraining.
        """
        for dispatcher in self.dispatchers():
            dispatcher.threshold = threshold

    def activation_rate(self) -> Optional[float]:
        """Mean of :attr:`dispatch_masks`: the fraction of dispatched tokens
        that were computed in the last forward (None without dispatchers)."""
        if not self.dispatch_masks:
            return None
        with torch.no_grad():
            return float(mean_rate(self.dispatch_masks))
