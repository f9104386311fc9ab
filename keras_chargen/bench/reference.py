"""The reference generation loops the benchmark measures, written as their sources write them.

- the TF "text generation with an RNN" tutorial's `OneStep` (`TutorialModel`, `OneStep`, `onestep_loop`);
- the Keras char-LSTM example (`keras_window_loop`);
- a client loop over an exported step artifact (`step_loop`) and a greedy one (`greedy_ids`);
- our decode loop compiled with XLA (`xla_generator`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_chargen import decoding
from keras_chargen.config import ChargenConfig
from keras_chargen.generation import CharGenerator
from keras_chargen.model import RNN_LAYERS
from keras_chargen.sampling import sampling_settings
from keras_chargen.vocab import OOV_TOKEN

PROMPT_CHARS = 100  # the prompt every generation mode continues
NEW_CHARS = 1000  # new characters per row and run


class TutorialModel(keras.Model):
    """The TF tutorial's model shape (`call(inputs, states, return_state)`), with our layers and weights."""

    def __init__(self, config: ChargenConfig, vocab_size: int) -> None:
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab_size, config.embedding_dim)
        self.rnns = [
            RNN_LAYERS[config.cell](config.units, return_sequences=True, return_state=True)
            for _ in range(config.num_layers)
        ]
        self.dense = keras.layers.Dense(vocab_size)

    def call(self, inputs, states=None, return_state=False, training=False):
        x = self.embedding(inputs, training=training)
        new_states = []
        for i, rnn in enumerate(self.rnns):
            initial = None if states is None else states[i]
            x, *layer_states = rnn(x, initial_state=initial, training=training)
            new_states.append(layer_states)
        x = self.dense(x, training=training)
        return (x, new_states) if return_state else x


class OneStep(tf.Module):
    """The tutorial's `OneStep`: one character per call, strings in and out."""

    def __init__(self, model: TutorialModel, vocabulary: list[str], temperature: float = 0.8) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature
        self.ids_from_chars = keras.layers.StringLookup(vocabulary=vocabulary, oov_token=OOV_TOKEN)
        self.chars_from_ids = keras.layers.StringLookup(vocabulary=vocabulary, oov_token=OOV_TOKEN, invert=True)
        self.prediction_mask = tf.one_hot(0, len(vocabulary) + 1, on_value=-float("inf"), off_value=0.0)

    @tf.function
    def generate_one_step(self, inputs, states=None):
        input_chars = tf.strings.unicode_split(inputs, "UTF-8")
        input_ids = self.ids_from_chars(input_chars).to_tensor()
        predicted_logits, states = self.model(inputs=input_ids, states=states, return_state=True)
        predicted_logits = predicted_logits[:, -1, :] / self.temperature + self.prediction_mask
        predicted_ids = tf.squeeze(tf.random.categorical(predicted_logits, num_samples=1), axis=-1)
        return self.chars_from_ids(predicted_ids), states


def onestep_loop(one_step: OneStep, prompts: list[str], chars: int) -> list[str]:
    """The tutorial's loop: the prompts, then each new character, one call per character; returns the texts."""
    states, next_char, result = None, tf.constant(prompts), []
    for _ in range(chars):
        next_char, states = one_step.generate_one_step(next_char, states=states)
        result.append(next_char)
    return [t.decode("utf-8") for t in tf.strings.reduce_join(tf.stack(result, axis=1), axis=1).numpy()]


def keras_window_loop(
    model: keras.Model, prompt_ids: np.ndarray, chars: int, maxlen: int, temperature: float = 0.8
) -> list[int]:
    """The Keras example: predict on the last `maxlen` characters, sample from the last position (0: argmax)."""
    rng = np.random.default_rng(0)
    ids = list(prompt_ids)
    for _ in range(chars):
        logits = model.predict(np.array([ids[-maxlen:]], np.int32), verbose=0)[0, -1].astype(np.float64)
        logits[0] = -np.inf
        if temperature == 0:
            ids.append(int(np.argmax(logits)))
            continue
        probs = np.exp((logits - logits.max()) / temperature)
        ids.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return ids[len(prompt_ids) :]


def step_loop(step, prompt_ids: np.ndarray, batch: int, chars: int, temperature: float = 0.8) -> np.ndarray:
    """A client loop over a step artifact: prime on the prompt, then sample in NumPy each character.

    The draw is the Gumbel-max trick, `argmax(logits / T + Gumbel noise)` (an exact categorical
    draw), with the noise for every step drawn before the loop, so a step costs the client one
    scale, one add and one argmax; the unknown id 0 is never drawn; temperature 0 is argmax.
    Returns the ids `(batch, chars)`.
    """
    states = step.initial_states(batch)
    for i in prompt_ids:
        logits, states = step(np.full([batch], i, np.int32), states)
    noise = np.random.default_rng(0).gumbel(size=(chars, *logits.shape)).astype(np.float32)
    if temperature == 0:
        noise[:] = 0.0
    noise[:, :, 0] = -np.inf
    scale = np.float32(1 / temperature if temperature > 0 else 1.0)
    out = np.zeros((batch, chars), np.int32)
    for t in range(chars):
        out[:, t] = np.argmax(logits * scale + noise[t], axis=1)
        logits, states = step(out[:, t], states)
    return out


def xla_generator(generator: CharGenerator, chars: int):
    """The id-level prime + decode loop of `generator` (temperature sampling), compiled with XLA."""

    @tf.function(jit_compile=True)
    def run(ids, lengths, temperature, seed):
        batch = tf.shape(ids)[0]
        max_new = tf.fill([batch], chars)
        state, _ = generator.begin(ids, lengths, max_new, tf.zeros(tf.stack([batch, 0, 0]), tf.int32))
        settings = sampling_settings(batch, temperature)
        ids_out, _ = generator.run(state, settings, decoding.row_seeds(seed, batch), max_new, None, chars)
        return ids_out

    return run
