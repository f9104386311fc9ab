#!/usr/bin/env python
"""The Keras fit script: `python scripts/train.py --text input.txt --out models/demo [flags]`.

Same flags as `keras-chargen train` (see `--help`); both call `keras_chargen.train`, which
prepares the corpus, builds the stateful model and runs `model.fit` with the callbacks.
Rerunning the same command resumes an interrupted run.
"""

import sys

from keras_chargen.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
