#!/usr/bin/env python
"""Benchmarks: `python scripts/bench.py --text ../shared/data/tinyshakespeare.txt [--quick] [--model-dir DIR]`.

Same as `keras-chargen bench`; writes docs/BENCHMARKS.md, docs/benchmarks.png and docs/benchmarks.json,
and prints the chars/s figures as one JSON object on the last line.
"""

import sys

from keras_chargen.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
