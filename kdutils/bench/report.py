"""The bench's tables: throughput, ratios and MFU per experiment, and where a step spends its time."""

from __future__ import annotations



from .measure import PHASES


def _peaks_line(peak: dict) -> str:
    parts = []
    for name, p in peak.items():
        runs = p["runs"]
        parts.append(f"{name} {p['best']:.0f} GFLOP/s (best of {len(runs)}; {min(runs):.0f}-{max(runs):.0f})")
    n = next(iter(peak.values())).get("n", 2048)
    return f"matmul peak, {n} x {n}, same run: " + ", ".join(parts)


def format_table(rows: list[dict]) -> str:
    """A plain-text report of ``run_bench`` rows: settings, pairs/s min/median/max, the ratio or why there
    is none, FLOP/s and MFU."""
    r0 = rows[0]
    devices = sorted({r["device"] for r in rows})
    precisions = sorted({r.get("fast_precision", "?") for r in rows})
    lines = [f"device: {', '.join(devices)}; reference loop fp32, fast loop {', '.join(precisions)}",
             f"batch {r0['batch_size']}, {r0['threads']} torch thread(s), {r0['clock']} clock"
             f"{' (process CPU time)' if r0['clock'] == 'cpu' else ''}, {r0['warmup']} warm-up steps per loop, "
             f"{r0['repeats']} paired repeats, blocks of about {r0['block_seconds']:g} s taking turns at going first"]
    load = r0.get("load_average") or {}
    if load.get("before") is not None:
        lines.append(f"load average (1 min) before / after: {load['before']:.1f} / {load['after']:.1f} on "
                     f"{load['cpus']} CPUs (above the bench's own threads: other work ran beside it)")
    if r0.get("matmul_peak_gflops"):
        lines.append(_peaks_line(r0["matmul_peak_gflops"]))
    lines.append(f"{'experiment':16} {'steps/block':>11} {'reference pairs/s':>20} {'fast pairs/s':>20}  "
                 f"{'fast / reference':<}")
    lines.append(f"{'':16} {'ref/fast':>11} {'min / median / max':>20} {'min / median / max':>20}")
    for r in rows:
        ref, fast = r["reference_pairs_per_s"], r["fast_pairs_per_s"]
        lines.append(f"{r['experiment']:16} {r['steps']['reference']:>5}/{r['steps']['fast']:<5} "
                     f"{ref['min']:6.2f}/{ref['median']:6.2f}/{ref['max']:6.2f} "
                     f"{fast['min']:6.2f}/{fast['median']:6.2f}/{fast['max']:6.2f}  {r['verdict']}")
    if r0["clock"] == "cpu":
        walls = ", ".join(f"{r['experiment']} {min(r['wall_ratios']):.2f}-{max(r['wall_ratios']):.2f}x" for r in rows)
        lines.append(f"pairs/s per CPU-second of the bench's thread(s); the wall-clock ratios of the same blocks: "
                     f"{walls}")
    lines.append("")
    lines.append(f"{'experiment':16} {'GFLOP/pair ref/fast':>20} {'TFLOP/s ref/fast':>17} "
                 f"{'MFU ref':>12} {'MFU fast':>12} {'peak RSS GB':>11}" +
                 (f" {'est. GPU GB @32':>15}" if any("gpu_estimate_peak_gb" in r for r in rows) else ""))
    for r in rows:
        mfu = {name: ("n/a" if r[f"{name}_mfu"] is None else f"{100 * r[f'{name}_mfu']:.0f}% {r[f'{name}_mfu_of']}")
               for name in ("reference", "fast")}
        rss = "n/a" if r.get("peak_gb") is None else f"{r['peak_gb']:.2f}"
        line = (f"{r['experiment']:16} {r['reference_pair_gflops']:9.1f}/{r['fast_pair_gflops']:<10.1f} "
                f"{r['reference_tflops']:8.3f}/{r['fast_tflops']:<8.3f} {mfu['reference']:>12} {mfu['fast']:>12} "
                f"{rss:>11}")
        if "gpu_estimate_peak_gb" in r:
            line += f" {r['gpu_estimate_peak_gb']:15.2f}"
        lines.append(line)
    lines.append("GFLOP/pair: model FLOPs of one pair at the token columns each loop computes (teacher forward + "
                 "student forward and backward on en and ko); MFU: achieved FLOP/s over the matmul peak of the "
                 "loop's precision; peak RSS: the process, both loops' models resident")
    if any("gpu_estimate_peak_gb" in r for r in rows):
        lines.append("est. GPU GB @32: live tensors of one engine step at batch 32 with CUDA's precision "
                     "(kdutils.bench.estimate_gpu_memory)")
    return "\n".join(lines)


def format_phases(rows: list[dict]) -> str:
    """A plain-text table of ``step_phases`` results: milliseconds and share of the step."""
    lines = [f"{'experiment':16} " + " ".join(f"{name:>22}" for name in PHASES) + f" {'step ms':>9}"]
    for r in rows:
        total = sum(r[name] for name in PHASES)
        cells = " ".join(f"{f'{r[name]:.0f} ms ({100 * r[name] / total:.0f}%)':>22}" for name in PHASES)
        lines.append(f"{r['experiment']:16} {cells} {total:9.0f}")
    return "\n".join(lines)
