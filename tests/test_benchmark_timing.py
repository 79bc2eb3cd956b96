"""mmdyt_tools.benchmark.timing and mmdyt_tools.paper: the timers bracket
each timed forward with a CUDA synchronisation when CUDA is in use (checked
with a stand-in: no GPU needed), and the paper's GFLOPs come from
configs/metafile.yml."""
import pytest
import torch

from mmdyt_tools.benchmark import timing
from mmdyt_tools.paper import paper_gflops


def test_timers_do_not_synchronise_without_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(timing, 'cuda_in_use', lambda: False)
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda: calls.append(1))
    times = timing.time_interleaved(dict(a=torch.relu, b=torch.tanh),
                                    torch.randn(4), warmup=1, repeats=3)
    assert calls == [] and [len(t) for t in times.values()] == [3, 3]


def test_timers_synchronise_around_each_timed_forward_on_cuda(monkeypatch):
    events = []
    monkeypatch.setattr(timing, 'cuda_in_use', lambda: True)
    monkeypatch.setattr(torch.cuda, 'synchronize',
                        lambda: events.append('sync'))

    def model(x):
        events.append('forward')
        return x

    timing.time_interleaved(dict(m=model), torch.randn(2), warmup=2,
                            repeats=3)
    # warm-up forwards untimed, then sync, forward, sync per timed forward
    assert events == ['forward'] * 2 + ['sync', 'forward', 'sync'] * 3


def test_timers_refuse_an_unknown_clock():
    with pytest.raises(ValueError, match='timer must be one of'):
        timing.time_interleaved(dict(m=torch.relu), torch.randn(2),
                                timer='gpu')


def test_paper_gflops_come_from_the_metafile(tmp_path):
    counted, rows = paper_gflops('configs/coco/dyt_vitb_mask-rcnn_1x.py')
    assert counted == 'Table 11, backbone + FPN'
    assert rows == {'Full (dense ViTDet-B)': 554.86, 'DyT': 468.40}
    assert paper_gflops('configs/ade20k/dyt_vitb.py') is None
    assert paper_gflops('x.py', metafile=str(tmp_path / 'none.yml')) is None
