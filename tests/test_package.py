import importlib
import subprocess
import sys

import pytest
from conftest import REPO

import keras_chargen


def test_every_public_name_is_the_object_of_its_module():
    assert keras_chargen.__all__ == sorted(keras_chargen._EXPORTS)
    for name, module in keras_chargen._EXPORTS.items():
        value = getattr(keras_chargen, name)
        assert value is getattr(importlib.import_module(f"keras_chargen.{module}"), name), name
        if callable(value):
            assert value.__name__ == name and value.__module__.startswith(f"keras_chargen.{module}"), name
    assert keras_chargen.MAX_NEW_CHARS == 100_000
    assert keras_chargen.__version__ == "0.1.0"
    with pytest.raises(AttributeError, match="module 'keras_chargen' has no attribute 'nope'"):
        _ = keras_chargen.nope


def test_public_names_are_not_shadowed_by_submodules():
    """Importing every submodule must not replace a re-exported function (e.g. `evaluate`) with a module."""
    code = (
        "import importlib, inspect, pkgutil, keras_chargen as k\n"
        "for m in pkgutil.walk_packages(k.__path__, 'keras_chargen.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "print([n for n in k.__all__ if inspect.ismodule(getattr(k, n))])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", done.stderr[-2000:]


def test_client_does_not_load_tensorflow():
    code = "import sys, keras_chargen.client; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
