"""mmdyt modules are visible from mmseg's, mmdet's and mmaction2's own
registries."""
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO_ROOT


@pytest.mark.parametrize('scope', ['mmseg', 'mmaction', 'mmdet'])
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


def test_registered_in_every_library():
    from mmaction.registry import MODELS as ACTION
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    for name in ('DyTViT', 'Adapter', 'MoEAdapter', 'LN2d'):
        assert SEG.get(name) is ACTION.get(name) is DET.get(name) is not None


def test_only_what_configs_build_is_registered():
    """Blocks, dispatchers and the loss are built by mmdyt's own code from
    their arguments, not from a ``type``: they are not registered."""
    from mmdyt.registry import LIBRARIES, library_registry
    for scope in LIBRARIES:
        models = library_registry(scope, 'MODELS')
        for name in ('DyTBlock', 'TokenDispatcher', 'DyTLoss'):
            assert name not in models.module_dict, (scope, name)


@pytest.mark.parametrize('kind, name', [
    ('HOOKS', 'DispatchStatsHook'), ('HOOKS', 'IterSeedHook'),
    ('HOOKS', 'ParameterCountHook'),
    ('TRANSFORMS', 'CheckedLoadImageFromFile'),
    ('OPTIM_WRAPPERS', 'AutocastOptimWrapper')
])
def test_every_kind_through_one_idiom_in_every_library(kind, name):
    from mmdyt.registry import LIBRARIES, library_registry
    classes = {library_registry(scope, kind).get(name) for scope in LIBRARIES}
    assert len(classes) == 1 and None not in classes


def test_task_models_only_in_their_library():
    from mmaction.registry import MODELS as ACTION
    from mmseg.registry import MODELS as SEG
    assert 'DyTEncoderDecoder' in SEG.module_dict
    assert 'DyTEncoderDecoder' not in ACTION.module_dict
    assert {'DyTRecognizer3D', 'AttentivePoolHead'} <= set(ACTION.module_dict)
    assert 'DyTRecognizer3D' not in SEG.module_dict
    from mmdet.registry import MODELS as DET
    assert {'DyTTwoStageDetector', 'SimpleFPN'} <= set(DET.module_dict)
    assert not {'DyTTwoStageDetector', 'SimpleFPN'} & (
        set(SEG.module_dict) | set(ACTION.module_dict))


def test_unknown_scope_or_kind_is_named():
    from mmdyt.registry import library_registry, register
    with pytest.raises(ValueError, match="unknown scope 'mmfoo'"):
        register('MODELS', scopes=('mmfoo', ))
    with pytest.raises(ValueError, match="unknown registry kind 'MODEL'"):
        library_registry('mmseg', 'MODEL')
