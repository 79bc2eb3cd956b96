"""DyT under torch.compile: the gathered evaluation is one graph (with a
graph break at each gather on a torch too old for that)."""
import pytest
import torch
import torch._dynamo

from helpers import TINY
from mmdyt.models import DISPATCH_MODES, DyTViT
from mmdyt.utils.torch_compat import (COMPILE_ONE_GRAPH, TORCH_FEATURES,
                                      torch_at_least)

ONE_GRAPH = torch_at_least(TORCH_FEATURES[COMPILE_ONE_GRAPH])


@pytest.mark.parametrize('dispatch', DISPATCH_MODES)
@pytest.mark.parametrize('with_cls_token', [True, False])
def test_compiled_dyt_is_one_graph_and_equals_eager(dispatch,
                                                    with_cls_token):
    """``fullgraph=True`` raises at any graph break: at a branch on the
    number of active tokens, at a cache keyed by a data pointer, at a
    broadcast against a data-dependent batch (layer dispatch). An older
    torch breaks the graph at each data-dependent gather; the compiled model
    must equal the eager one there too."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = DyTViT(
        arch=TINY, img_size=32, patch_size=8, dispatch=dispatch,
        with_cls_token=with_cls_token,
        use_rel_pos_bias=with_cls_token).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if '_adapter.up' in name or 'relative_position' in name:
                param.normal_(0, 0.1)  # adapters and biases that matter
    compiled = torch.compile(model, fullgraph=ONE_GRAPH, backend='eager')
    for scale in (1., 3.):  # other inputs, other numbers of active tokens
        inputs = scale * torch.randn(2, 3, 32, 32)
        with torch.inference_mode():
            (want, ), masks = model.forward_with_masks(inputs)
            (got, ) = compiled(inputs)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        if dispatch is not None:  # tokens were skipped
            rate = float(torch.stack([m.mean() for m in masks]).mean())
            assert 0 < rate < 1
    torch._dynamo.reset()
