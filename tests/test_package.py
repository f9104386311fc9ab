import subprocess
import sys

from conftest import REPO

import keras_chargen


def test_every_public_name_resolves():
    for name in keras_chargen.__all__:
        assert getattr(keras_chargen, name) is not None, name


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
