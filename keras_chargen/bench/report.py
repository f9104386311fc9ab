"""The benchmark report: chars/s per mode, the speed targets, `BENCHMARKS.md`, `benchmarks.png`, `benchmarks.json`."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf

from keras_chargen.bench.reference import NEW_CHARS, PROMPT_CHARS
from keras_chargen.io import atomic_write_text


def chars_per_second(report: dict) -> dict[str, float]:
    """`{mode: median chars/s}` for the modes that ran."""
    return {k: round(v["median"], 1) for k, v in report["results"].items() if "median" in v}


# speed targets (issues 6 and 12): (what, modes whose best median counts, ratio to onestep_b1)
SPEED_TARGETS = [
    ("in-graph generation (what the SavedModel runs), batch 1", ("ingraph_b1",), 5.0),
    ("in-graph generation, batch 64, plain or XLA, whichever wins", ("ingraph_b64", "ingraph_xla_b64"), 20.0),
    ("TFLite int8 step loop, batch 1", ("tflite_step_int8_b1",), 10.0),
    ("TFLite whole generator, fp32, batch 1", ("tflite_generator_b1",), 7.0),
    ("TFLite whole generator, dynamic-range int8, batch 1", ("tflite_generator_int8_b1",), 7.0),
    (
        "TFLite whole generator, dynamic-range int8, top-k 40 + top-p 0.9, batch 1",
        ("tflite_generator_int8_topk_topp_b1",),
        10.0,
    ),
]


def target_rows(results: dict) -> list[tuple[str, float, float, bool]]:
    """`(what, measured ratio to onestep_b1, target ratio, met)` for each speed target that was measured."""
    base = results["onestep_b1"]["median"]
    rows = []
    for what, modes, target in SPEED_TARGETS:
        medians = [results[m]["median"] for m in modes if "median" in results.get(m, {})]
        if medians:
            rows.append((what, max(medians) / base, target, max(medians) / base >= target))
    if "median" in results.get("train_pipeline", {}) and "median" in results.get("train_bare", {}):
        ratio = results["train_pipeline"]["median"] / results["train_bare"]["median"]
        rows.append(("training: our pipeline vs a bare fit on in-memory arrays", ratio, 0.9, ratio >= 0.9))
    return rows


KEPT = "<!-- written by hand below: `keras-chargen bench` keeps it -->"


def write_report(report: dict, out_dir: Path) -> None:
    """`BENCHMARKS.md` (tables, targets, rooflines) and `benchmarks.png` (bar chart) in `out_dir`."""
    results, machine = report["results"], report["machine"]
    base = results["onestep_b1"]["median"]
    weight_bytes = machine["weight_bytes_per_step_fp32"]
    roof_b1 = machine["weights_bandwidth_bytes_per_s"] / weight_bytes
    flops_per_char = 2 * weight_bytes / 4
    cfg = report["config"]
    lines = [
        "# Benchmarks",
        "",
        f"Model: {cfg['layers']}×{cfg['units']} {cfg['cell'].upper()}, vocabulary {cfg['vocab']} "
        f"({machine['params']:,} parameters). Generation: {NEW_CHARS} new characters after a "
        f"{PROMPT_CHARS}-character prompt (priming included), temperature 0.8; chars/s summed over rows. "
        "Median of the runs after a warm-up run, with min–max.",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; reading a matrix the size of the step "
        f"weights ({weight_bytes / 1e6:.1f} MB, BLAS matrix-vector product, all cores) "
        f"{machine['weights_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; DRAM (256 MiB copy) "
        f"{machine['dram_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; float32 matmul (independent batch-64 "
        f"per-gate products, as the batch-64 loop multiplies) {machine['matmul_flops'] / 1e9:.1f} GFLOP/s; "
        "peak RSS of the benchmark process "
        f"{machine['peak_rss_mib']:.0f} MiB.",
        "",
        "Reproduce: `keras-chargen bench --text ../shared/data/tinyshakespeare.txt"
        f"{' --quick' if report['quick'] else ''}` (or `python scripts/bench.py ...`).",
        "",
        "| mode | chars/s (median) | min–max | × tutorial OneStep (b1) | of roofline |",
        "|---|---|---|---|---|",
    ]
    for name, value in results.items():
        if "median" not in value:
            lines.append(f"| {name} | did not run: {value['error']} | | | |")
            continue
        roof = ""
        if name.endswith("_b1") and not name.startswith(("onestep", "keras")):
            roof = f"{value['median'] / (roof_b1 * (4 if 'int8' in name else 1)):.0%} of the weight-read bound"
        elif name.endswith("_b64") and "int8" not in name:  # int8 kernels are not bound by the fp32 rate
            roof = f"{value['median'] * flops_per_char / machine['matmul_flops']:.0%} of matmul FLOP/s"
        lines.append(
            f"| {name} | {value['median']:,.0f} | {value['min']:,.0f}–{value['max']:,.0f} | "
            f"{value['median'] / base:.1f}× | {roof} |"
        )
    lines += [
        "",
        "Speed targets (ratios to `onestep_b1` measured in this run):",
        "",
        "| target | measured | target | |",
        "|---|---|---|---|",
    ]
    for what, ratio, target, met in target_rows(results):
        lines.append(f"| {what} | {ratio:.2f}× | ≥ {target:g}× | {'met' if met else '**missed**'} |")
    lines += [
        "",
        f"Batch-1 roofline: each character reads all {weight_bytes / 1e6:.1f} MB of float32 step weights "
        f"(recurrent layers + output layer), so reading them as fast as this machine's BLAS reads a matrix "
        f"of that size caps fp32 generation at {roof_b1:,.0f} chars/s ({4 * roof_b1:,.0f} for int8 weights, "
        "a quarter of the bytes). Caches can keep part of the weights between characters (a mode may "
        f"pass 100 %); DRAM alone would cap it at "
        f"{machine['dram_bandwidth_bytes_per_s'] / 2 / weight_bytes:,.0f} chars/s (a copy moves each byte "
        f"twice). Batch 64 is compute-bound: {flops_per_char / 1e6:.1f} MFLOP per character against the "
        "measured matmul rate.",
        "",
        "Training (`train_*`): chars/s of `fit` on the same windows and model, our stateful `tf.data` "
        "pipeline vs NumPy arrays in memory. Peak resident memory above the process's at the start of "
        "each (model, windows, fits): "
        + ", ".join(
            f"{name} +{results[name]['rss_growth_mib']:,.0f} MiB"
            for name in ("train_pipeline", "train_bare")
            if results.get(name, {}).get("rss_growth_mib") is not None
        )
        + ". Both run in the benchmark process after the generation runs, whose allocations TF keeps "
        "and reuses, so these are lower bounds; docs/memory.md has training on a 100 MB corpus in a "
        "fresh process.",
        "",
        *_recommended_lines(results),
        "Profile: where a batch-1 step goes, the weight layout the in-graph loop uses, why a missed target "
        "is missed and why XLA is not on by default (it recompiles for every new batch size, prompt length "
        "and output length, and TF Serving runs XLA only behind an experimental flag): "
        "[profile.md](profile.md).",
        "",
        "![chars/s per mode](benchmarks.png)",
    ]
    path = out_dir / "BENCHMARKS.md"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = old[old.index(KEPT) :] if KEPT in old else f"{KEPT}\n"  # A/B runs and notes written by hand
    atomic_write_text(path, "\n".join(lines) + "\n\n" + kept)
    _plot(results, out_dir / "benchmarks.png")
    (out_dir / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")


def _recommended_lines(results: dict) -> list[str]:
    """The recommended model's training speed and its share of the matmul rate (empty if not measured)."""
    rec = results.get("train_recommended", {})
    if "median" not in rec:
        return []
    shares = ", ".join(
        f"{rec['fraction_of_matmul'][name]:.0%} of the {rate / 1e9:.0f} GFLOP/s measured for {name} products "
        "of its recurrent shape"
        for name, rate in rec["matmul_flops"].items()
    )
    return [
        f"Training the recommended model (`keras_chargen.recommended`: {rec['settings']}; the README's "
        f"10-minute command) with our pipeline: **{rec['median']:,.0f} chars/s** (min–max "
        f"{rec['min']:,.0f}–{rec['max']:,.0f}) × {rec['flops_per_char'] / 1e6:.1f} MFLOP per character "
        f"(forward + backward products) = {rec['flops_per_s'] / 1e9:.0f} GFLOP/s, {shares}. Against plain "
        "Keras over 2 minutes: [train_speed.md](train_speed.md); where the step's time goes: "
        "[training.md](training.md).",
        "",
    ]


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, v in results.items() if "median" in v]
    values = [results[n]["median"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    colors = [
        "tab:orange" if n.startswith("train") else "tab:gray" if n.startswith(("onestep", "keras")) else "tab:blue"
        for n in names
    ]
    ax.barh(names, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("characters per second (log scale)")
    ax.invert_yaxis()
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    ax.set_title("Generation and training speed (grey: reference approaches)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cpu_name() -> str:
    """The CPU's model name as `lscpu` prints it (from /proc/cpuinfo; the platform's processor otherwise)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
