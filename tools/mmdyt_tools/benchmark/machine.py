"""Facts about the machine a benchmark ran on, recorded with its rows: speed
ratios depend on the CPU (which kernels a library picks differs between
Intel and AMD CPUs, docs/en/benchmarks/speed.md), on its bfloat16 units and
on the device the models ran on."""
import platform

import torch


def cpu_model() -> str:
    """The CPU's model name, from ``/proc/cpuinfo`` (else what ``platform``
    knows)."""
    try:
        with open('/proc/cpuinfo') as file:
            for line in file:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16() -> str:
    """The CPU's bfloat16 matrix units, from its /proc/cpuinfo flags:
    ``'AMX-BF16'``, ``'AVX512-BF16'`` or ``'none'`` (what bfloat16
    autocast can gain depends on them)."""
    try:
        with open('/proc/cpuinfo') as file:
            flags = next((line.split(':', 1)[1].split() for line in file
                          if line.startswith('flags')), [])
    except OSError:
        flags = []
    if 'amx_bf16' in flags:
        return 'AMX-BF16'
    return 'AVX512-BF16' if 'avx512_bf16' in flags else 'none'


def device_name(device: torch.device) -> str:
    """``'cpu'``, or the GPU's name (``torch.cuda.get_device_name``)."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return device.type
