"""Setting a DyT model's activation rate for a benchmark."""
import torch
from torch import Tensor

from mmdyt.models import DyTViT


def _bias_for_rate(scores: Tensor, rate: float) -> float:
    """Bias that makes a fraction ``rate`` of ``scores + bias`` positive."""
    ordered = scores.flatten().double().sort().values
    count = ordered.numel()
    active = int(round(rate * count))
    if active >= count:
        return float(1 - ordered[0])
    if active <= 0:
        return float(-1 - ordered[-1])
    # the midpoint between the last skipped and the first active score
    return float(-(ordered[count - active - 1] + ordered[count - active]) / 2)


@torch.no_grad()
def set_activation_rate(model: DyTViT, inputs: Tensor, rate: float) -> None:
    """Shift every dispatcher's bias so that ``rate`` of the tokens of
    ``inputs`` are active.

    One forward: a pre-hook on each dispatcher sets its bias from the scores
    of the tokens it receives, which already reflect the biases set in the
    blocks before it. The model then activates (up to ties) a fraction
    ``rate`` of the patch tokens of ``inputs`` at every dispatcher; other
    inputs of the same distribution get about the same rate. Only the
    biases change, so this is a benchmark device, not a training method.

    Args:
        model (DyTViT): The model, in eval mode.
        inputs (Tensor): The calibration inputs.
        rate (float): Target activation rate in [0, 1].
    """
    if not 0 <= rate <= 1:
        raise ValueError(f'rate must be in [0, 1], got {rate}')
    if model.training:
        raise ValueError('set_activation_rate needs the model in eval mode')
    # in evaluation a token dispatcher scores every token, the prefix too
    # (whose decisions the block overrides): count the others only
    prefix = 0 if model.dispatch == 'layer' else model.num_prefix_tokens

    def hook(dispatcher, args):
        scores = dispatcher.linear(args[0][:, prefix:]).squeeze(-1) - \
            dispatcher.linear.bias
        bias = _bias_for_rate(scores, rate) + dispatcher.logit_threshold
        dispatcher.linear.bias.fill_(bias)

    handles = [
        d.register_forward_pre_hook(hook) for d in model.dispatchers()
    ]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
