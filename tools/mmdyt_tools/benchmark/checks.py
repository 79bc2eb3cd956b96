"""Checks that a benchmark's peers compute what their eager models do."""
import torch
from torch import Tensor

from mmdyt.models import DyTViT
from mmdyt_tools.benchmark.model_set import BenchmarkModels


#: How far a peer's output may be from its eager model's: for compiled and
#: pre-packed kernels float32 rounding of the largest error over the largest
#: output; for bfloat16 autocast the relative (Frobenius) error of the whole
#: output of a model that skips nothing.
PEER_TOLERANCE = {'compiled': 1e-3, 'prepacked': 1e-3, 'bf16': 0.05}

#: DyT under bfloat16 autocast: tokens whose score lies at the threshold may
#: flip under bfloat16's rounding of the stream the dispatchers read, and one
#: token's MLP update in or out is a large change at that token. So DyT is
#: checked on its decisions instead: the share that agrees with float32's
#: and the activation rate.
BF16_DECISIONS = dict(agree=0.97, rate=0.02)


def check_peers(models: BenchmarkModels, inputs: Tensor) -> None:
    """Raise if a compiled, pre-packed or bfloat16 model's output differs
    from its eager model's on the benchmark input beyond its kind's
    :data:`PEER_TOLERANCE` (none may change what is timed)."""
    decisions_checked = False
    with torch.inference_mode():
        for peer, model in models.peers().items():
            name, _, how = peer.partition('_')
            # every bfloat16 peer (packed, autocast only, compiled)
            how = 'bf16' if how.startswith('bf16') else how
            eager = getattr(models, name)
            if how == 'bf16' and getattr(eager, 'dispatch', None):
                if not decisions_checked:
                    check_bf16_decisions(eager, inputs)
                    decisions_checked = True
                continue
            want, got = eager(inputs), model(inputs)
            want, got = (flat_output(v) for v in (want, got))
            if how == 'bf16':
                err = float((want - got).norm() / want.norm())
                scale = 1.0
            else:
                err = float((want - got).abs().max())
                scale = float(want.abs().max())
            if err > PEER_TOLERANCE[how] * scale:
                raise RuntimeError(f'{how} changed the {name} model\'s '
                                   f'output (error {err:.3g})')


def flat_output(output) -> Tensor:
    """A model's output as one float32 vector: a tensor, or the tensors of
    a tuple or list (a Swin's feature maps of several shapes)."""
    if isinstance(output, (tuple, list)):
        return torch.cat([o.float().flatten() for o in output])
    return output.float().flatten()


def check_bf16_decisions(model: DyTViT, inputs: Tensor) -> None:
    """Raise if DyT's dispatch decisions under bfloat16 autocast differ
    from float32's beyond :data:`BF16_DECISIONS`."""
    _, want = model.forward_with_masks(inputs)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
        _, got = model.forward_with_masks(inputs)
    # (a Swin's masks differ in size from stage to stage)
    want, got = (flat_output(v) for v in (want, got))
    agree = float((want == got).float().mean())
    rate_change = abs(float(want.mean() - got.mean()))
    if agree < BF16_DECISIONS['agree'] or \
            rate_change > BF16_DECISIONS['rate']:
        raise RuntimeError(
            f'bf16 changed the dyt model\'s decisions: {agree:.2%} agree '
            f'with float32\'s, the rate moved by {rate_change:.3f}')
