"""Training precision: bfloat16 only where the CPU multiplies it natively; the weights stay float32."""

import keras
import numpy as np
import pytest

from keras_chargen.config import ChargenConfig
from keras_chargen.errors import ChargenError
from keras_chargen.model import RecurrentStep, build_model
from keras_chargen.precision import cpu_flags, has_native_bf16, resolve_precision


def test_auto_picks_bfloat16_only_with_native_instructions():
    assert resolve_precision("auto", {"avx2", "fma"}) == "float32"
    assert resolve_precision("auto", {"avx512f", "avx512_bf16"}) == "mixed_bfloat16"
    assert resolve_precision("auto", {"amx_bf16"}) == "mixed_bfloat16"
    assert resolve_precision("float32", {"avx512_bf16"}) == "float32"
    assert resolve_precision("mixed_bfloat16", set()) == "mixed_bfloat16"


def test_cpu_flags_read_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"} and has_native_bf16(cpu_flags(info))
    assert cpu_flags(tmp_path / "missing") == set()


def test_a_bad_precision_is_a_config_error():
    with pytest.raises(ChargenError, match="precision must be one of auto, float32, mixed_bfloat16"):
        ChargenConfig(precision="float16")


def test_a_model_trained_in_mixed_bfloat16_has_float32_weights_that_load_into_the_step():
    config = ChargenConfig(num_layers=1, units=8, embedding_dim=4)
    keras.utils.set_random_seed(0)
    mixed = build_model(config, 10, batch_size=2, stateful=True, policy="mixed_bfloat16")
    mixed.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(0).integers(1, 10, (4, 6))
    mixed.fit(ids, ids, batch_size=2, verbose=0, shuffle=False)
    assert mixed.output.dtype == "float32"
    assert {w.dtype for w in mixed.weights} == {"float32"}
    inference = build_model(config, 10)  # float32, what exports read
    inference.set_weights(mixed.get_weights())
    step = RecurrentStep(inference)
    logits, _ = step(ids[:2, 0], step.initial_states(2))
    reference = inference(ids[:2, :1]).numpy()[:, 0]
    np.testing.assert_allclose(logits.numpy(), reference, atol=1e-5)
