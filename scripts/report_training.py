#!/usr/bin/env python
"""Write docs/training.md for a trained model: validation bits/char, training and generation speed, samples.

Usage: python scripts/report_training.py MODEL_DIR --text CORPUS [--out docs/training.md]

Training chars/s = characters fitted (batches × batch_size × seq_len, from backup/progress.json) /
fitting wall time (which includes validation passes and per-epoch samples). Generation chars/s is
batch 1, 1000 new characters after a 100-character prompt, median of 5 runs after a warm-up.
"""

import argparse
import json
import platform
import shutil
from pathlib import Path

import tensorflow as tf

from keras_chargen import FileSource, evaluate, load_generator
from keras_chargen.bench import NEW_CHARS, measure
from keras_chargen.config import ChargenConfig
from keras_chargen.data import num_shuffled_batches, num_stateful_batches
from keras_chargen.evaluation import ngram_baseline


def generation_speed(generator, prompt: str, batch: int = 1, repeats: int = 5) -> float:
    """Median chars/s of `NEW_CHARS` characters at `batch` rows (warm-up excluded), as `keras-chargen bench`."""
    return measure(lambda: generator.generate([prompt] * batch, 0.8, NEW_CHARS, seed=0), batch * NEW_CHARS, repeats)[
        "median"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--text", required=True)
    parser.add_argument("--out", default="docs/training.md")
    parser.add_argument("--note", default="", help="a sentence about the conditions of the run")
    args = parser.parse_args()
    model_dir = Path(args.model_dir)
    config = ChargenConfig.load(model_dir / "config.json")
    progress = json.loads((model_dir / "backup" / "progress.json").read_text())
    corpus = json.loads((model_dir / "data" / "corpus.json").read_text())
    if config.layout == "stateful":
        per_epoch = num_stateful_batches(corpus["num_train"], config.batch_size, config.seq_len)
    else:
        per_epoch = num_shuffled_batches(corpus["num_train"], config.batch_size, config.seq_len, config.window_stride)
    batches = progress["epoch"] * per_epoch + progress["step"]
    chars = batches * config.batch_size * config.seq_len
    train_speed = chars / progress["elapsed_seconds"]
    result = evaluate(model_dir, FileSource((Path(args.text),)))
    generator = load_generator(model_dir)
    prompt = Path(args.text).read_text(encoding="utf-8")[:100]
    gen_b1 = generation_speed(generator, prompt)
    gen_b64 = generation_speed(generator, prompt, batch=64, repeats=3)
    ngram = {order: ngram_baseline(model_dir, FileSource((Path(args.text),)), order) for order in (4, 5, 6)}
    samples = {t: generator.generate(["ROMEO:\n"], t, 400, seed=1)[0] for t in (0.2, 0.5, 0.8, 1.0)}
    params = sum(int(tf.size(w)) for w in generator.model.weights)
    curves = Path(args.out).with_name(Path(args.out).stem + "_curves.png")
    curves.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_dir / "history.png", curves)
    lines = [
        f"# Training run: {config.num_layers}×{config.units} {config.cell.upper()} on {corpus['source']}",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"TensorFlow {tf.__version__}. {args.note}",
        "",
        "Command:",
        "",
        "```bash",
        f"keras-chargen train --text {corpus['source']} --out {model_dir} --max-minutes {config.max_minutes:g} "
        f"--epochs {config.epochs} --save-every {config.save_every}",
        f"python scripts/report_training.py {model_dir} --text {args.text}",
        "```",
        "",
        "| measure | value |",
        "|---|---|",
        f"| parameters | {params:,} |",
        f"| settings | seq_len {config.seq_len}, batch {config.batch_size}, {config.layout} layout, "
        f"state resets {config.state_reset_prob:g}, Adam {config.learning_rate:g} ({config.lr_schedule}), "
        f"clipnorm {config.clipnorm:g} |",
        f"| fitting time | {progress['elapsed_seconds'] / 60:.1f} min |",
        f"| characters trained | {chars:,} ({chars / corpus['num_train']:.2f} epochs) |",
        f"| training speed | {train_speed:,.0f} chars/s (incl. validation and samples) |",
        f"| validation loss (last {config.val_fraction:.0%}) | {result['loss']:.4f} nats/char |",
        f"| validation bits/char | {result['bpc']:.4f} |",
        f"| validation perplexity | {result['perplexity']:.3f} |",
        f"| generation, batch 1 (1000 chars after a 100-char prompt) | {gen_b1:,.0f} chars/s |",
        f"| generation, batch 64 | {gen_b64:,.0f} chars/s (summed over rows) |",
        "",
        f"![training curves]({curves.name})",
        "",
        "For scale (`keras-chargen evaluate MODEL --text ... --ngram-order K`, same split), a character n-gram "
        "with interpolated absolute discounting, trained in seconds: "
        + ", ".join(f"order {k} {v:.4f}" for k, v in ngram.items())
        + " nats/char.",
        "",
        "## Samples (prompt `ROMEO:\\n`, seed 1)",
        "",
    ]
    for temperature, text in samples.items():
        lines += [f"### temperature {temperature}", "", "```", "ROMEO:\n" + text, "```", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines[:30]))


if __name__ == "__main__":
    main()
