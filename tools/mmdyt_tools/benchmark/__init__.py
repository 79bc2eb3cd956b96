"""The speed benchmark harness behind ``tools/analysis_tools/benchmark_*.py``
and ``tools/deployment/benchmark_runtimes.py``.

One job per module: ``timing`` (interleaved timers, GPU-synchronised),
``stats`` (bootstrap ratios), ``machine`` (CPU facts), ``report``
(markdown tables), ``presets`` (named backbone settings), ``peers`` and
``swin_peers`` (the implementations DyT is timed against), ``model_set``
and ``models`` (the backbones of one benchmark), ``rate`` (setting the
activation rate), ``checks`` (peers compute what their models do),
``backbone`` (one backbone setting), ``whole_model`` (a config's whole
model, ``mode='tensor'``) and ``test_step`` (a config's ``test_step``).
"""
