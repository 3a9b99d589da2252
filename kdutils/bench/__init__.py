"""Distillation throughput: the engine's step against the study's training step.

Both run on full-size architectures built from the real configurations with
random weights (nothing is downloaded): the CLIP ViT-L/14 text tower of SD
v1.4 as teacher, and CLIP or klue/roberta-small as student. The reference
reproduces the study's step: fp32, a teacher forward that builds a graph,
separate student passes for en and ko, and three ``.cpu().numpy()`` calls.

``run_bench`` times the two loops in alternating blocks and reports the
spread of their paired ratios, or says that the spread is too wide to
conclude; on a CPU it counts the process's CPU time of one thread, which
other work on the machine does not stretch. In the same run it measures the
machine's matmul peak and reports each loop's model-FLOPs utilisation.

The package follows the bench's order: ``loops`` (the two steps), ``measure`` (timing, FLOPs, peaks,
``run_bench``), ``memory`` (GPU memory counted on the CPU), ``report`` (the tables).
"""

from .loops import (  # noqa: F401 (kd.bench.* as before)
    CLIP_L14_TEXT, KLUE_ROBERTA_SMALL, TINY_ROBERTA, TINY_TEXT, build_configs, build_models, device_name,
    fast_step, reference_step,
)
from .measure import (  # noqa: F401 (kd.bench.* as before)
    BenchSettings, CLOCKS, CPU_DEFAULTS, GPU_DEFAULTS, MAX_SPREAD, PHASES, _verdict, forward_flops,
    machine_peaks, matmul_peak, pair_flops, peak_dtypes, run_bench, step_phases,
)
from .memory import (  # noqa: F401 (kd.bench.* as before)
    LiveTensorBytes, estimate_gpu_memory,
)
from .report import (  # noqa: F401 (kd.bench.* as before)
    format_phases, format_table,
)
