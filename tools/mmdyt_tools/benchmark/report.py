"""Markdown tables of benchmark rows."""
from typing import Sequence


#: Columns of :func:`format_markdown`: (header, row key, interval key).
TABLE_COLUMNS = (
    ('setting', 'setting', None),
    ('threads', 'threads', None),
    ('batch', 'batch', None),
    ('rate', 'rate', None),
    ('DyT speedup', 'speedup', 'speedup_ci'),
    ('FLOPs bound', 'flops_speedup', None),
    ('efficiency', 'efficiency', 'efficiency_ci'),
    ('reference gather speedup', 'reference_speedup', None),
    ('DyT vs reference', 'dyt_vs_reference', 'dyt_vs_reference_ci'),
    ('adapter-only / dense time', 'adapter_vs_dense', 'adapter_vs_dense_ci'),
    ('dense / dense (noise)', 'noise_control', 'noise_control_ci'),
    ('ideal-slice speedup', 'ideal_speedup', None),
    ('DyT vs ideal slice', 'dyt_vs_ideal', 'dyt_vs_ideal_ci'),
)


def peer_columns(kind: str, gain: str, label: str, doing: str,
                 gain_intervals: bool = True) -> tuple:
    """Columns of the table of the peers of ``backbone.peer_fields``
    (``kind``, ``gain``), headed ``label`` (e.g. ``'compiled'``) and
    ``doing`` (e.g. ``'compiling'``)."""

    def interval(key: str) -> str:
        return f'{key}_ci' if gain_intervals else None

    return (
        ('setting', 'setting', None),
        ('threads', 'threads', None),
        ('batch', 'batch', None),
        (f'{label} DyT speedup', f'{kind}_speedup', f'{kind}_speedup_ci'),
        ('FLOPs bound', 'flops_speedup', None),
        (f'{label} efficiency', f'{kind}_efficiency',
         f'{kind}_efficiency_ci'),
        (f'{doing}: dense gain', f'dense_{gain}_gain',
         interval(f'dense_{gain}_gain')),
        (f'{doing}: DyT gain', f'dyt_{gain}_gain',
         interval(f'dyt_{gain}_gain')),
        (f'{label} DyT vs eager dense', f'dyt_{kind}_vs_dense',
         interval(f'dyt_{kind}_vs_dense')),
    )


#: Columns of the compiled peers' table (rows of a ``--compile`` run).
COMPILED_COLUMNS = peer_columns('compiled', 'compile', 'compiled',
                                'compiling', gain_intervals=False)

#: Columns of the pre-packed peers' table (rows of a ``--prepack`` run).
PREPACKED_COLUMNS = peer_columns('prepacked', 'prepack', 'pre-packed',
                                 'pre-packing')

#: Columns of the bfloat16 peers' table (rows of a ``--bf16`` run;
#: ``backbone.bf16_fields``).
BF16_COLUMNS = (
    ('setting', 'setting', None),
    ('threads', 'threads', None),
    ('batch', 'batch', None),
    ('best dense bf16', 'best_dense_bf16', None),
    ('DyT bf16 vs best dense bf16', 'dyt_bf16_vs_best_dense_bf16',
     'dyt_bf16_vs_best_dense_bf16_ci'),
    ('ideal slice bf16 vs best dense bf16', 'ideal_bf16_vs_best_dense_bf16',
     'ideal_bf16_vs_best_dense_bf16_ci'),
    ('DyT bf16 vs ideal slice bf16', 'dyt_bf16_vs_ideal_bf16',
     'dyt_bf16_vs_ideal_bf16_ci'),
    ('DyT bf16 vs autocast alone', 'dyt_bf16_vs_amp_today',
     'dyt_bf16_vs_amp_today_ci'),
    ('dense bf16 vs autocast alone', 'dense_bf16_vs_amp_today',
     'dense_bf16_vs_amp_today_ci'),
    ('DyT bf16 vs DyT fp32', 'dyt_bf16_vs_fp32', 'dyt_bf16_vs_fp32_ci'),
    ('FLOPs bound', 'flops_speedup', None),
)


def format_markdown(rows: Sequence[dict],
                    columns: Sequence[tuple] = TABLE_COLUMNS) -> str:
    """A markdown table of benchmark rows; ratios with their 95%
    bootstrap interval.

    Args:
        rows (Sequence[dict]): The rows.
        columns (Sequence[tuple]): ``(header, key, interval key)`` per
            column; ``key`` may be a function of the row giving its cell.
            Defaults to :data:`TABLE_COLUMNS`.
    """
    lines = [
        '| ' + ' | '.join(header for header, _, _ in columns) + ' |',
        '|---|' + '---:|' * (len(columns) - 1),
    ]
    for row in rows:
        cells = []
        for _, key, interval in columns:
            value = key(row) if callable(key) else row[key]
            text = f'{value:.3f}' if isinstance(value, float) else str(value)
            if interval:
                low, high = row[interval]
                text += f' [{low:.3f}, {high:.3f}]'
            cells.append(text)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
