"""The native example (examples/c/chargen, LiteRT's C API) against Python LiteRT (`TFLiteGenerator`), side by side.

One untrained default 2x512 LSTM over tiny-shakespeare's characters (speed does not depend on the
weights' values) is exported as TFLite float32 and dynamic-range int8. For each, in alternating
rounds on the same host: the native program's wall time for one process that generates `--chars`
characters and for one that generates 1 (the start-up: loading and compiling the model), its peak
resident memory (`ru_maxrss` of the child), and Python LiteRT's `generate_text` for the same prompt,
seed and length in a warm interpreter. The medians go into docs/native_bench.json and into the
marked table of docs/export.md.

    make -C examples/c && python scripts/bench_native.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAM = REPO / "examples" / "c" / "chargen"
TEXT = REPO / "keras_chargen" / "corpora" / "tinyshakespeare.txt"
DOC = REPO / "docs" / "export.md"
BEGIN, END = "<!-- bench_native: written by scripts/bench_native.py -->", "<!-- end of bench_native -->"
PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"
THREADS = (1, 2)  # both sides alike; 2 is Python's `TFLiteGenerator` default, 1 the native program's (LiteRT's)


def make_model(out: Path) -> Path:
    """An untrained default 2x512 LSTM over the corpus' vocabulary, as a model directory."""
    from keras_chargen import ChargenConfig, Vocabulary, build_model

    config = ChargenConfig()
    vocab = Vocabulary(sorted(set(TEXT.read_text(encoding="utf-8"))))
    out.mkdir(parents=True)
    config.save(out / "config.json")
    vocab.save(out / "vocab.json")
    build_model(config, vocab.size).save(out / "model.keras")
    return out


def run_native(directory: Path, chars: int, seed: int, threads: int) -> tuple[float, str]:
    """One process: (wall seconds, its text)."""
    args = [str(PROGRAM), str(directory), "--prompt", PROMPT, "--length", str(chars), "--seed", str(seed)]
    start = time.perf_counter()
    result = subprocess.run([*args, "--threads", str(threads)], capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"chargen failed: {result.stderr.decode().strip()}")
    return elapsed, result.stdout.decode()


# A fresh, small Python (no site packages: a few MB) forks and execs the program and reads its peak RSS: a child
# forked straight from this process would count this process's memory (TensorFlow's) as its own, since the kernel
# keeps the larger of the RSS before and after exec.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss if status == 0 else -1)
"""


def peak_rss(args: list[str]) -> int:
    """Peak RSS (KiB) of one run of `args`, from the kernel's accounting of the child."""
    result = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *args], capture_output=True, text=True)
    kib = int(result.stdout.strip() or -1)
    if kib < 0:
        raise SystemExit(f"{args[0]} failed while measuring its memory")
    return kib


def native_peak_rss(directory: Path, chars: int) -> int:
    """Peak RSS (KiB) of one native run."""
    args = [str(PROGRAM), str(directory), "--prompt", PROMPT, "--length", str(chars), "--seed", "1"]
    return peak_rss([*args, "--threads", str(max(THREADS))])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def bench(directory: Path, chars: int, rounds: int, threads: int) -> dict:
    """Alternating rounds of the native program and Python LiteRT on one export folder, `threads` each."""
    from keras_chargen.export.runtimes import TFLiteGenerator

    python = TFLiteGenerator(directory / "generate.tflite", num_threads=threads)
    python.generate_text([PROMPT], 5, seed=0)  # warm: the interpreter is allocated
    native_full, native_start, python_times, ratios = [], [], [], []
    for r in range(rounds):
        for order in (0, 1) if r % 2 == 0 else (1, 0):
            if order == 0:
                native_full.append(run_native(directory, chars, r, threads)[0])
                native_start.append(run_native(directory, 1, r, threads)[0])
            else:
                start = time.perf_counter()
                python.generate_text([PROMPT], chars, seed=r)
                python_times.append(time.perf_counter() - start)
        ratios.append(python_times[-1] / max(native_full[-1] - native_start[-1], 1e-9))
    same = run_native(directory, chars, 7, threads)[1] == python.generate_text([PROMPT], chars, seed=7)[0]
    full, startup, py = (statistics.median(v) for v in (native_full, native_start, python_times))
    return {
        "threads": threads,
        "model_bytes": (directory / "generate_fixed.tflite").stat().st_size,
        "dynamic_model_bytes": (directory / "generate.tflite").stat().st_size,
        "native_process_s": full,
        "native_startup_s": startup,
        "native_chars_per_s_end_to_end": chars / full,
        "native_chars_per_s_generating": chars / max(full - startup, 1e-9),
        "python_litert_chars_per_s": chars / py,
        "native_over_python_median_ratio": statistics.median(ratios),
        "native_peak_rss_kib": native_peak_rss(directory, chars),
        "same_text": same,
    }


def table(results: dict, chars: int, cpu: str, floor_kib: int) -> str:
    rows = [
        "| TFLite file | threads | size | native: chars/s (generating) | native: chars/s (whole process) "
        "| native start-up | native peak RSS | Python LiteRT `TFLiteGenerator`: chars/s | native / Python "
        "(median of rounds) | same text |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name.split(' @ ')[0]} | {r['threads']} | {r['model_bytes'] / 1e6:.1f} MB "
            f"| {r['native_chars_per_s_generating']:,.0f} | {r['native_chars_per_s_end_to_end']:,.0f} "
            f"| {r['native_startup_s'] * 1000:.0f} ms | {r['native_peak_rss_kib'] / 1024:.0f} MiB "
            f"| {r['python_litert_chars_per_s']:,.0f} | {r['native_over_python_median_ratio']:.2f}× "
            f"| {'yes' if r['same_text'] else 'NO'} |"
        )
    note = (
        f"\nMeasured by `scripts/bench_native.py` in one run ({chars} characters after a {len(PROMPT)}-character "
        f"prompt, batch 1, medians of alternating runs) on {cpu}, {os.cpu_count()} cores, while other engineers' "
        "tests ran on the same host (busy: the figures move by 2× from run to run; read the per-round ratio). "
        "Untrained default 2×512 LSTM (the speed does not depend on the weights). Native: `examples/c/chargen` on "
        "`generate_fixed.tflite` (LiteRT's compiled model, CPU, XNNPACK, `--threads`); 'generating' subtracts the "
        "start-up of a 1-character run (loading and compiling the model); peak RSS is the whole process's "
        "`ru_maxrss` at the larger thread count (read by a small launcher; /bin/true reads {floor} MiB there). "
        "Python: `TFLiteGenerator` on `generate.tflite` (the classic interpreter, the same threads), warm."
    ).replace("{floor}", f"{floor_kib / 1024:.0f}")
    return "\n".join(rows) + "\n" + note


def write_doc(text: str) -> None:
    """Replace the marked block of docs/export.md (atomically)."""
    from keras_chargen.io import atomic_write_text

    doc = DOC.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} lacks the markers {BEGIN} ... {END}")
    head, rest = doc.split(BEGIN, 1)
    atomic_write_text(DOC, head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=1000, help="characters per timed run (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/ as they are")
    args = parser.parse_args()
    if not PROGRAM.exists():
        raise SystemExit(f"{PROGRAM} is missing: make -C examples/c")
    from keras_chargen.export import export_model
    from keras_chargen.quiet import quiet_tensorflow_start

    quiet_tensorflow_start()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp) / "model")
        for name, quantize, folder in (("float32", "none", "tflite"), ("int8 (dynamic)", "dynamic", "tflite-dynamic")):
            export_model(model, Path(tmp) / "exported", "tflite", quantize=quantize)
            for threads in THREADS:
                key = f"{name} @ {threads}"
                results[key] = bench(Path(tmp) / "exported" / folder / "1", args.chars, args.rounds, threads)
                print(key, json.dumps(results[key]), flush=True)
    cpu = cpu_name()
    floor = peak_rss(["/bin/true"])
    text = table(results, args.chars, cpu, floor)
    print(text)
    if not args.no_doc:
        from keras_chargen.io import atomic_write_text

        record = {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "busy_host": True,
            "chars": args.chars,
            "rss_floor_kib": floor,
            "results": results,
        }
        atomic_write_text(REPO / "docs" / "native_bench.json", json.dumps(record, indent=1) + "\n")
        write_doc(text)


if __name__ == "__main__":
    main()
