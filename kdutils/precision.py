"""Which precision runs where in training: the student's autocast, the teacher's dtype, the Accelerator.

``auto`` picks bf16 on GPUs and CPUs with bf16 matrix units, fp16 on older GPUs, and fp32 elsewhere
(Apple's MPS included); the ``tiny`` profile sets fp32 so that its asserted numbers are the same on every machine.
"""

from __future__ import annotations

import torch


def cpu_bf16_supported() -> bool:
    """True when this CPU has bf16 matrix units: AVX512-BF16 or AMX.

    ``torch.backends.cpu.get_cpu_capability()`` is not enough: on an AMD EPYC
    with avx512_bf16 in /proc/cpuinfo it says only "AVX512". torch's own
    probes (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``)
    see the feature; the capability string is read as well, for builds that
    name it there. Tests mock this function.
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    for check in checks:
        try:
            if check is not None and check():
                return True
        except (RuntimeError, AttributeError):
            pass
    try:
        capability = torch.backends.cpu.get_cpu_capability().upper()
    except (RuntimeError, AttributeError):
        return False
    return "AMX" in capability or "BF16" in capability


def teacher_dtype(device, precision: str = "no") -> torch.dtype:
    """The frozen teacher's dtype (its outputs are targets only, it is never trained).

    fp16 on CUDA; bf16 on a CPU that trains in bf16 (``precision == "bf16"``),
    where the bf16 matrix units make its forward several times faster; fp32
    otherwise (a CPU in fp32, and Apple's MPS, where the course trains in fp32).
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and precision == "bf16":
        return torch.bfloat16
    return torch.float32


def mixed_precision(device, setting: str = "auto") -> str:
    """The autocast precision for training on ``device``: ``"no"`` (fp32), ``"bf16"`` or ``"fp16"``.

    ``auto`` picks bf16 only on GPUs that compute in it (compute capability
    8.0 or more: A100, RTX 30xx and newer) and fp16 on older ones such as the
    T4, where Accelerate adds a gradient scaler. ``torch.cuda.is_bf16_supported()``
    is not the test: it also says yes on a T4, which only emulates bf16,
    slowly. On a CPU ``auto`` picks bf16 where the CPU has bf16 matrix units
    (AVX512-BF16 or AMX, :func:`cpu_bf16_supported`; a 2048² matmul ran 3 to 4
    times faster than in fp32 on such an AMD EPYC) and fp32 elsewhere. ``fp16``
    cannot be forced on a CPU (Accelerate would silently train in fp32).

    On Apple's MPS ``auto`` trains in fp32: every MPS device computes in fp32,
    while autocast and the fp16 gradient scaler on MPS came to torch late and
    depend on the torch and macOS versions, and no Mac was at hand to check
    them. A learner can still force ``bf16`` there.
    """
    from .profiles import PRECISIONS

    if setting not in PRECISIONS:
        raise ValueError(f"unknown mixed_precision {setting!r}; choose one of {PRECISIONS}")
    kind = torch.device(device).type
    if setting == "auto":
        if kind == "cpu":
            return "bf16" if cpu_bf16_supported() else "no"
        if kind != "cuda":
            return "no"
        return "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    if setting == "fp16" and kind != "cuda":
        raise ValueError(f"fp16 autocast needs a CUDA GPU, not {kind!r}; use mixed_precision='bf16' or 'no'")
    if setting == "bf16" and kind == "cuda" and torch.cuda.get_device_capability() < (8, 0):
        import warnings

        warnings.warn(f"{torch.cuda.get_device_name()} has no bf16 units (compute capability "
                      f"{'.'.join(map(str, torch.cuda.get_device_capability()))}): bf16 is emulated and slow; "
                      f"mixed_precision='auto' picks fp16 here", stacklevel=2)
    return setting


def process_state(device):
    """Accelerate's ``PartialState`` for a run on ``device``: which process this is (``is_main_process``).

    It is built with the ``cpu`` flag that ``make_accelerator`` passes on, since the first state built fixes the
    device for the whole process.
    """
    from accelerate import PartialState

    return PartialState(cpu=torch.device(device).type == "cpu")


def make_accelerator(device, precision: str):
    """An ``Accelerator`` for one training run at ``precision`` (from ``mixed_precision``).

    Accelerate keeps one precision per process, so a kernel that trains once
    in bf16 and then in fp32 would stop with "AcceleratorState has already
    been initialized". Only that precision setting is cleared; the process
    state (ranks, device, process group) stays as the launcher set it.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=torch.device(device).type == "cpu", mixed_precision=precision)


def sampling_dtype(device: str) -> torch.dtype:
    """The sampling dtype: fp16 on CUDA, fp32 on Apple's MPS and on the CPU.

    MPS stays in fp32, the dtype diffusers' own MPS guide runs SD in (with
    attention slicing under 64 GB of memory): every MPS device computes fp32,
    while how fp16 behaves there depends on the torch and macOS versions, and
    no Mac was at hand to check it. The CPU samples in fp32 as before.
    """
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32
