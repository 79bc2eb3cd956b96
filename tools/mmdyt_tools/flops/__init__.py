"""FLOPs: mmengine's counter with mmdyt's operators (``counter``) and the
whole-model report at measured activation rates (``report``); the backbone's
analytic FLOPs are ``mmdyt.models.flops``."""
from mmdyt_tools.flops.counter import (count_flops, flop_analyzer,
                                       flops_by_operator)
from mmdyt_tools.flops.report import (VARIANTS, ModelFlops, format_gflops,
                                      head_flops, measure_rates_on_dataloader,
                                      measure_rates_on_random,
                                      model_flops_report)

__all__ = [
    'count_flops', 'flop_analyzer', 'flops_by_operator', 'VARIANTS',
    'ModelFlops', 'format_gflops', 'head_flops',
    'measure_rates_on_dataloader', 'measure_rates_on_random',
    'model_flops_report'
]
