import subprocess
import sys

import keras_chargen

from conftest import REPO


def test_every_public_name_resolves():
    for name in keras_chargen.__all__:
        assert getattr(keras_chargen, name) is not None, name


def test_client_does_not_load_tensorflow():
    code = "import sys, keras_chargen.client; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
