"""The recommended settings are written once: the README's 10-minute command is `train_command()`."""

import re

from conftest import REPO

from keras_chargen.cli import build_parser
from keras_chargen.recommended import RECOMMENDED, recommended_config, train_command, train_flags


def test_readme_holds_the_recommended_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"keras-chargen train[^`]*?--max-minutes 10", readme, re.S)
    commands = [" ".join(c.replace("\\\n", " ").split()) for c in found]
    assert train_command() in commands


def test_the_flags_parse_back_to_the_recommended_config():
    args = build_parser().parse_args(["train", *train_flags(2, "out")])
    config = recommended_config(max_minutes=2)
    for field in RECOMMENDED:
        assert getattr(args, field) == getattr(config, field)
