"""mmdyt modules are visible from mmseg's and mmaction2's own registries."""
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT


@pytest.mark.parametrize('scope', ['mmseg', 'mmaction'])
def test_custom_imports_builds_through_library_registry(tmp_path, scope):
    config = tmp_path / 'cfg.py'
    config.write_text(
        textwrap.dedent(f"""
        custom_imports = dict(imports=['mmdyt'], allow_failed_imports=False)
        default_scope = '{scope}'
        model = dict(type='DyTViT', arch='tiny', img_size=32)
        """))
    # a fresh interpreter: only the config imports mmdyt
    script = textwrap.dedent(f"""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({str(config)!r})
        init_default_scope(cfg.default_scope)
        from {scope}.registry import MODELS
        model = MODELS.build(cfg.model)
        print(type(model).__module__, type(model).__name__)
        """)
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True,
                            text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert 'mmdyt.models.backbones.dyt_vit DyTViT' in result.stdout


def test_registered_in_both_libraries():
    from mmaction.registry import MODELS as ACTION
    from mmseg.registry import MODELS as SEG
    for name in ('DyTViT', 'TokenDispatcher', 'Adapter', 'MoEAdapter'):
        assert SEG.get(name) is ACTION.get(name) is not None
