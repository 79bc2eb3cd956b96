"""Install mmdyt: ``pip install -e .`` (mmcv: docs/en/get_started.md).

Two packages: ``mmdyt`` (the models, registered in mmseg, mmdet and
mmaction2) and ``mmdyt_tools`` (``tools/mmdyt_tools``: what the CLIs under
``tools/`` share: the benchmark harness, FLOPs, model inputs, ONNX export).
"""
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(HERE, 'mmdyt', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def parse_requirements(name: str) -> list:
    """Requirement lines of ``requirements/NAME.txt``, comments dropped."""
    with open(osp.join(HERE, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


setup(
    name='mmdyt',
    version=read_version(),
    description='Dynamic Tuning (DyT) of frozen ViTs for OpenMMLab semantic '
    'segmentation (mmseg), object detection (mmdet) and video recognition '
    '(mmaction2)',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    python_requires='>=3.10',
    packages=find_packages(include=('mmdyt', 'mmdyt.*')) + find_packages(
        where='tools', include=('mmdyt_tools', 'mmdyt_tools.*')),
    package_dir={'mmdyt_tools': 'tools/mmdyt_tools'},
    include_package_data=True,
    # mmcv is not listed here, the OpenMMLab way: a compiled mmcv 2.1.0 that
    # is already installed stays; `[mim]` asks for mmcv, `[lite]` mmcv-lite.
    install_requires=parse_requirements('runtime'),
    extras_require={
        'mim': parse_requirements('mminstall'),
        'lite': parse_requirements('mmcv_lite'),
        'tests': parse_requirements('tests'),
        'deploy': parse_requirements('deploy'),
    },
    zip_safe=False)
