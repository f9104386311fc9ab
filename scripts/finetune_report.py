#!/usr/bin/env python
"""Fine-tuning against training from scratch for the same time, on a text with new characters.

Trains two 1×384 LSTMs on `--text` for `--minutes` of fitting each, one after the other: one
fine-tuned from `--init-from` (a trained model, e.g. the 10-minute Shakespeare model of
docs/quality.md), one from scratch, and prints their validation losses (last 10 %) as a Markdown
table for docs/training.md.

Usage: python scripts/finetune_report.py --init-from models/quality/recommended --text licenses.txt --minutes 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from keras_chargen import ChargenConfig, FileSource, Vocabulary, evaluate, load_generator, train
from keras_chargen.finetune import inherit_config

SETTINGS = dict(seq_len=64, batch_size=64, lr_schedule="cosine", patience=0, seed=0)
SCRATCH = dict(cell="lstm", num_layers=1, units=384, embedding_dim=64, learning_rate=4e-3)
FINETUNE_LR = 2e-3  # a fine-tuned model starts near a good solution: half the peak rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-from", required=True, type=Path)
    parser.add_argument("--text", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("models/finetune"))
    args = parser.parse_args()
    source = FileSource((args.text,))
    old = Vocabulary.load(args.init_from / "vocab.json")
    runs = {
        "fine-tuned": inherit_config(
            args.init_from, {**SETTINGS, "learning_rate": FINETUNE_LR, "max_minutes": args.minutes}
        ),
        "from scratch": ChargenConfig(**SETTINGS, **SCRATCH, max_minutes=args.minutes),
    }
    rows = []
    for name, config in runs.items():
        out = args.workdir / name.replace(" ", "-")
        result = train(config, source, out, verbose=2, sample_every_epoch=False)
        score = evaluate(out, source)
        vocab = Vocabulary.load(out / "vocab.json")
        sample = load_generator(out).generate(["This License"], 0.5, 200, seed=1)[0]
        rows.append((name, config, result.progress, score, vocab, sample))
    record = json.loads((args.workdir / "from-scratch" / "trained_on.json").read_text())
    new = "".join(rows[0][4].tokens[len(old.tokens) :])
    print(f"Text: {args.text} ({record['characters']:,} characters); new characters: {new!r}")
    print("\n| run | learning rate | fitting s | epochs + batches | validation nats/char |\n|---|---:|---:|---:|---:|")
    for name, config, progress, score, _, _ in rows:
        done = f"{progress.epoch} + {progress.step}"
        print(f"| {name} | {config.learning_rate:g} | {progress.elapsed_seconds:.0f} | {done} | {score['loss']:.4f} |")
    for name, *_, sample in rows:
        print(f"\n{name}, temperature 0.5:\n```\nThis License{sample}\n```")


if __name__ == "__main__":
    main()
