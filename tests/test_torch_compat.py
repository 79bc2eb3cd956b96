"""The version-compat layer: one spelling of the torch APIs that changed
between torch 2.1 and the newest torch, and clear errors for features that
need a newer torch."""
import pytest
import torch

from mmdyt.utils import torch_compat
from mmdyt.utils.torch_compat import (ONNX_EXPORT, autocast_dtype,
                                      autocast_enabled, is_compiling,
                                      is_exporting, require_torch,
                                      torch_at_least)


def test_autocast_dtype_follows_the_autocast_context():
    assert autocast_dtype('cpu') is None and not autocast_enabled('cpu')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert autocast_dtype('cpu') is torch.bfloat16
        assert autocast_enabled('cpu')
        assert autocast_dtype('cuda') is None  # another device type
        with torch.autocast('cpu', enabled=False):
            assert autocast_dtype('cpu') is None
    assert autocast_dtype('cpu') is None


def test_is_compiling_is_true_only_in_a_compiled_graph():
    assert not is_compiling() and not is_exporting()

    def where(x):
        return x + 1 if is_compiling() else x - 1

    x = torch.zeros(2)
    assert torch.equal(where(x), x - 1)
    compiled = torch.compile(where, backend='eager', fullgraph=True)
    assert torch.equal(compiled(x), x + 1)


def test_version_comparison_ignores_local_tags(monkeypatch):
    monkeypatch.setattr(torch_compat, 'TORCH_VERSION',
                        torch_compat.digit_version('2.1.2+cu121'))
    assert torch_at_least('2.1.0') and torch_at_least('2.1.2')
    assert not torch_at_least('2.1.3') and not torch_at_least('2.6')


def test_a_feature_on_too_old_a_torch_names_both_versions(monkeypatch):
    monkeypatch.setattr(torch_compat, 'TORCH_VERSION',
                        torch_compat.digit_version('2.1.2'))
    monkeypatch.setattr(torch, '__version__', '2.1.2')
    with pytest.raises(RuntimeError) as error:
        require_torch(ONNX_EXPORT)
    message = str(error.value)
    assert ONNX_EXPORT in message
    assert f'torch >= {torch_compat.TORCH_FEATURES[ONNX_EXPORT]}' in message
    assert 'torch 2.1.2' in message
    require_torch('a feature of torch 2.0', '2.0.0')  # old enough: no error


@pytest.mark.skipif(torch_at_least(torch_compat.TORCH_FEATURES[ONNX_EXPORT]),
                    reason='this torch exports to ONNX')
def test_onnx_export_on_an_old_torch_says_which_torch_it_needs(tmp_path):
    from mmdyt_tools.deploy.onnx_export import export_onnx
    with pytest.raises(RuntimeError, match='needs torch >= '):
        export_onnx(torch.nn.Linear(2, 2), torch.zeros(1, 2),
                    str(tmp_path / 'model.onnx'))
    assert not (tmp_path / 'model.onnx').exists()
