"""mmdyt's tool library: what the CLIs under ``tools/`` share.

- :mod:`mmdyt_tools.inputs`: configs, task models and their inputs;
- :mod:`mmdyt_tools.twins`: adapter-only and dense twins of a DyT model;
- :mod:`mmdyt_tools.flops`: FLOPs counting and whole-model FLOPs reports;
- :mod:`mmdyt_tools.dispatch_plots`: drawing dispatch decisions and rates;
- :mod:`mmdyt_tools.benchmark`: the speed benchmark harness (backbones,
  whole models, test steps) and its timers;
- :mod:`mmdyt_tools.deploy`: ONNX export and ONNX Runtime / OpenVINO runs.

It is installed beside ``mmdyt`` (``setup.py``); it imports ``mmdyt``, never
the other way round.
"""
