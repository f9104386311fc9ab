import math
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from conftest import keras_step_logits

from keras_chargen import MAX_NEW_CHARS, ChargenError, RecurrentStep


def reference_greedy(generator, prompt: str, length: int) -> str:
    """Step-by-step reference: feed the prompt, then argmax each step (OOV excluded), in Python."""
    step = RecurrentStep(generator.model)
    vocab = generator.vocabulary
    ids = [vocab.index(c) + 1 for c in prompt] or [vocab.index("\n") + 1]
    states = step.initial_states(1)
    for i in ids:
        logits, states = step(tf.constant([i]), states)
    out = []
    for _ in range(length):
        scores = logits.numpy()[0]
        scores[0] = -np.inf
        nxt = int(np.argmax(scores))
        out.append(vocab[nxt - 1])
        logits, states = step(tf.constant([nxt]), states)
    return "".join(out)


def entropy_bits(text: str) -> float:
    counts = np.array(list(Counter(text).values()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_greedy_in_graph_equals_step_by_step_reference(generator):
    for prompt in ["ANNA:\nThe ", "É", ""]:
        assert generator.generate([prompt], 0.0, 120)[0] == reference_greedy(generator, prompt, 120)


def test_seeds_reproduce_and_differ(generator):
    first = generator.generate(["BRUNO:\n"], 1.0, 200, seed=7)
    assert generator.generate(["BRUNO:\n"], 1.0, 200, seed=7) == first
    assert generator.generate(["BRUNO:\n"], 1.0, 200, seed=8) != first
    assert generator.generate(["BRUNO:\n"], 1.0, 200) != generator.generate(["BRUNO:\n"], 1.0, 200)  # unseeded


def test_higher_temperature_gives_higher_entropy(generator):
    cold, hot = generator.generate(["ANNA:\n", "ANNA:\n"], [0.3, 1.5], 3000, seed=1)
    assert entropy_bits(hot) > entropy_bits(cold) + 0.1


def test_sampled_frequencies_follow_softmax_of_scaled_logits(generator):
    rows, temperature, prompt = 4000, 0.7, "The king "
    firsts = [t[0] for t in generator.generate([prompt] * rows, temperature, 1, seed=3)]
    step = RecurrentStep(generator.model)
    states = step.initial_states(1)
    for c in prompt:
        logits, states = step(tf.constant([generator.vocabulary.index(c) + 1]), states)
    scores = logits.numpy()[0] / temperature
    scores[0] = -np.inf
    assert_draws_follow(firsts, scores, generator.vocabulary)


def assert_draws_follow(firsts: list[str], scores: np.ndarray, vocabulary: list[str]) -> None:
    """The first characters drawn, one per row, are distributed as softmax(scores) (5-sigma bounds)."""
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    counts = Counter(firsts)
    for i, char in enumerate(vocabulary, start=1):
        expected = probs[i] * len(firsts)
        assert abs(counts.get(char, 0) - expected) <= 5 * math.sqrt(expected + 1) + 2, char


def test_batch_of_prompts_with_different_lengths_matches_one_by_one(generator):
    prompts = ["", "A", "CÉLINE:\nThe river was", "My lord is near!\n\nDMITRI:\n"]
    batched = generator.generate(prompts, 0.0, 60)
    assert batched == [generator.generate([p], 0.0, 60)[0] for p in prompts]
    # one temperature per row: the greedy row is unaffected by its sampled neighbours
    mixed = generator.generate(prompts, [0.0, 1.0, 0.0, 1.0], 60, seed=2)
    assert mixed[0] == batched[0] and mixed[2] == batched[2]


def test_per_row_lengths_and_prompt_in_text(generator):
    out = generator(
        tf.constant(["ANNA:", "BRUNO:"]), tf.constant([0.0, 0.0]), tf.constant([5, 12]), tf.constant([0], tf.int64)
    )
    generated = [g.decode() for g in out["generated"].numpy()]
    assert [len(g) for g in generated] == [5, 12]
    assert [t.decode() for t in out["text"].numpy()] == ["ANNA:" + generated[0], "BRUNO:" + generated[1]]


def test_unknown_prompt_characters(generator):
    with pytest.raises(ChargenError, match=r"not in the model's vocabulary: '§' \(U\+00A7\)"):
        generator.generate(["ANNA § said"], 0.0, 10)
    skipped = generator.generate(["ANNA § said"], 0.0, 30, oov="skip")
    assert skipped == generator.generate(["ANNA  said"], 0.0, 30)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature must be a finite number >= 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 0; got nan"),
        (dict(temperature=float("inf")), "temperature must be a finite number"),
        (dict(max_new_chars=-1), "max_new_chars must be an integer in 0..100000; got -1"),
        (dict(max_new_chars=MAX_NEW_CHARS + 1), "max_new_chars must be an integer in 0..100000"),
        (dict(seed=-3), r"seed must be an integer in 0..2147483647 \(None = random\); got -3"),
        (dict(seed=2**31), "seed must be an integer in 0..2147483647"),
        (dict(prompts=["A", "B"], temperature=[0.5, 0.5, 0.5]), "got 3 temperatures for 2 prompts"),
        (dict(oov="ignore"), "oov must be one of"),
        (dict(top_k=0), r"top_k must be an integer >= 1 \(None = off\); got 0"),
        (dict(top_k=-3), "top_k must be an integer >= 1"),
        (dict(top_k=2.5), r"top_k must be an integer >= 1 \(None = off\); got 2.5"),
        (dict(top_k=True), "top_k must be an integer >= 1"),
        (dict(top_p=0.0), r"top_p must be a number in \(0, 1\] \(1 = off\); got 0.0"),
        (dict(top_p=1.01), r"top_p must be a number in \(0, 1\]"),
        (dict(top_p=float("nan")), r"top_p must be a number in \(0, 1\] \(1 = off\); got nan"),
        (dict(top_p="0.9"), r"top_p must be a number in \(0, 1\]"),
        (dict(repetition_penalty=0.0), r"repetition_penalty must be a finite number > 0 \(1 = off\); got 0.0"),
        (dict(repetition_penalty=-1.2), "repetition_penalty must be a finite number > 0"),
        (dict(repetition_penalty=float("nan")), r"repetition_penalty must be a finite number > 0 \(1 = off\); got nan"),
        (dict(repetition_penalty=float("inf")), r"repetition_penalty must be a finite number > 0 \(1 = off\); got inf"),
        (dict(stop=""), r"stop must be a non-empty string \(None = off\); got ''"),
        (dict(stop=5), r"stop must be a non-empty string \(None = off\); got 5"),
        (dict(stop="x" * 1001), "stop has 1001 characters; the maximum is 1000"),
    ],
)
def test_invalid_generation_arguments(generator, kwargs, message):
    args = dict(prompts=["ANNA"], temperature=0.5, max_new_chars=10, seed=None) | kwargs
    with pytest.raises(ChargenError, match=message):
        generator.generate(**args)


def test_graph_rejects_bad_temperature_too(generator):
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be a finite number >= 0"):
        generator(tf.constant(["A"]), tf.constant([-1.0]), tf.constant([3]), tf.constant([0]))


def test_generator_config_round_trip(generator):
    from keras_chargen import CharGenerator

    clone = CharGenerator.from_config(generator.get_config())
    clone.model.set_weights(generator.model.get_weights())
    assert clone.vocabulary == generator.vocabulary
    assert clone.generate(["ANNA"], 0.0, 40) == generator.generate(["ANNA"], 0.0, 40)


RELOAD_SCRIPT = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "keras_chargen":
            raise ImportError("keras_chargen must not be needed to load the SavedModel")
sys.meta_path.insert(0, Block())
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
prompts = json.loads(sys.argv[2])
out = serve(prompt=tf.constant(prompts), temperature=tf.constant([0.0, 0.9, 1.2]),
            max_new_chars=tf.constant([80, 80, 80]), seed=tf.constant([11]),
            top_k=tf.constant([0, 0, 0]), top_p=tf.constant([1.0, 1.0, 1.0]),
            repetition_penalty=tf.constant([1.0, 1.0, 1.0]), stop=tf.constant(["", "", ""]))
print(json.dumps([t.decode("utf-8") for t in out["text"].numpy()]))
"""


def test_savedmodel_reloads_without_keras_chargen_and_matches(generator, tmp_path):
    import json
    import subprocess
    import sys

    from keras_chargen import export_savedmodel

    path = export_savedmodel(generator, tmp_path / "sm" / "1")
    prompts = ["ANNA:\n", "", "ÉLODIE: café"]
    done = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(path), json.dumps(prompts)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    texts = json.loads(done.stdout.strip().splitlines()[-1])
    expected = generator.generate(prompts, [0.0, 0.9, 1.2], 80, seed=11)
    assert texts == [p + g for p, g in zip(prompts, expected)]


# --- sampling strategies and stop strings ---


def step_logits_of_generation(generator, prompt: str, generated: str) -> np.ndarray:
    """The logits that chose each generated character `(len(generated), vocab)`, OOV excluded (-inf)."""
    vocab = generator.vocabulary
    ids = [vocab.index(c) + 1 for c in prompt + generated]
    logits = keras_step_logits(generator, ids[:-1])[len(prompt) - 1 :]
    logits[:, 0] = -np.inf
    return logits


def test_top_k_1_and_top_p_near_0_equal_greedy(generator):
    prompts = ["ANNA:\n", "", "The king"]
    greedy = generator.generate(prompts, 0.0, 80)
    assert generator.generate(prompts, 1.5, 80, seed=4, top_k=1) == greedy
    assert generator.generate(prompts, 1.5, 80, seed=4, top_p=1e-7) == greedy


def test_filters_that_keep_everything_change_no_draw(generator):
    """Temperature-only calls skip the processors and the stop-string check (`tf.cond`); a filter that
    keeps every token or a stop string that never comes runs them, and must draw exactly the same ids."""
    prompts, temperatures = ["ANNA:\n", "", "The king"], [0.7, 0.0, 1.3]
    plain = generator.generate(prompts, temperatures, 60, seed=11)
    assert len(set(plain)) == 3 and all(len(text) == 60 for text in plain)
    everything = len(generator.vocabulary) + 1
    assert generator.generate(prompts, temperatures, 60, seed=11, top_k=everything) == plain
    assert generator.generate(prompts, temperatures, 60, seed=11, top_p=1.0) == plain
    assert generator.generate(prompts, temperatures, 60, seed=11, stop="\u00a7never") == plain


def test_top_k_samples_stay_in_the_top_k_at_every_step(generator):
    prompt, k = "DMITRI:\n", 3
    texts = generator.generate([prompt] * 2, 2.0, 100, seed=6, top_k=k)
    assert texts[0] != texts[1]
    for text in texts:
        logits = step_logits_of_generation(generator, prompt, text)
        ranks = [int((row > row[generator.vocabulary.index(c) + 1]).sum()) for row, c in zip(logits, text)]
        assert max(ranks) < k and len(set(ranks)) == k  # inside the top k, and not just greedy


def test_top_p_samples_stay_in_the_nucleus_at_every_step(generator):
    prompt, p, temperature = "CÉLINE:\n", 0.6, 1.3
    texts = generator.generate([prompt] * 2, temperature, 100, seed=8, top_p=p)
    for text in texts:
        logits = step_logits_of_generation(generator, prompt, text) / temperature
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for row, c in zip(probs, text):
            chosen = row[generator.vocabulary.index(c) + 1]
            assert row[row > chosen].sum() < p + 1e-5  # the mass ranked before it is below p
    assert texts[0] != texts[1] != generator.generate([prompt], 0.0, 100)[0]


def test_repetition_penalty_greedy_matches_the_step_by_step_reference(generator):
    prompt, penalty = "ANNA:\nThe ", 1.8
    vocab = generator.vocabulary
    ids = [vocab.index(c) + 1 for c in prompt]
    step = RecurrentStep(generator.model)
    states = step.initial_states(1)
    for i in ids:
        logits, states = step(tf.constant([i]), states)
    seen, out = set(ids), []
    for _ in range(100):
        scores = logits.numpy()[0]
        marked = np.array([i in seen for i in range(len(scores))])
        scores = np.where(marked, np.where(scores > 0, scores / penalty, scores * penalty), scores)
        scores[0] = -np.inf
        nxt = int(np.argmax(scores))
        seen.add(nxt)
        out.append(vocab[nxt - 1])
        logits, states = step(tf.constant([nxt]), states)
    expected = "".join(out)
    assert generator.generate([prompt], 0.0, 100, repetition_penalty=penalty)[0] == expected
    assert expected != generator.generate([prompt], 0.0, 100)[0]


def test_repetition_penalty_first_draw_follows_the_penalized_softmax(generator):
    rows, prompt, penalty = 4000, "The king ", 2.5
    firsts = [t[0] for t in generator.generate([prompt] * rows, 1.0, 1, seed=9, repetition_penalty=penalty)]
    scores = step_logits_of_generation(generator, prompt, generator.vocabulary[-1])[0]
    seen = np.zeros(len(scores), bool)
    seen[[generator.vocabulary.index(c) + 1 for c in prompt]] = True
    scores = np.where(seen, np.where(scores > 0, scores / penalty, scores * penalty), scores)
    assert_draws_follow(firsts, scores, generator.vocabulary)


def test_several_temperatures_for_one_prompt_give_one_row_each(generator):
    rows = generator.generate("ANNA:", [0.0, 0.7, 1.3], 60, seed=5)
    assert rows == generator.generate(["ANNA:"] * 3, [0.0, 0.7, 1.3], 60, seed=5)
    assert len(rows) == 3 and rows[0] == generator.generate("ANNA:", 0.0, 60)[0] and len(set(rows)) == 3


def test_stop_strings_end_each_row_where_expected_and_pad(generator):
    prompts = ["ANNA:", "BRUNO:\n", "ANNA:", "", "CÉLINE:"]
    greedy = generator.generate(prompts, 0.0, 120)
    non_ascii = next((g[i : i + 2] for g in greedy for i, c in enumerate(g) if ord(c) > 127), greedy[4][5:7])
    stops = ["\n", greedy[1][20:23], "", "zzz", non_ascii]  # "zzz" never comes: that row runs to its length
    lengths = [120, 120, 50, 120, 120]
    out = generator(
        tf.constant(prompts),
        tf.constant(0.0),
        tf.constant(lengths),
        tf.constant([0], tf.int64),
        stop=tf.constant(stops),
    )
    expected = [g[: g.index(s) + len(s)] if s and s in g[:n] else g[:n] for g, s, n in zip(greedy, stops, lengths)]
    assert [g.decode() for g in out["generated"].numpy()] == expected
    assert expected[0] == greedy[0][: greedy[0].index("\n") + 1] and expected[3] == greedy[3]
    assert [t.decode() for t in out["text"].numpy()] == [p + e for p, e in zip(prompts, expected)]
    assert generator.generate(prompts[:2], 0.0, 120, stop="\n")[0] == expected[0]


def test_stopped_rows_are_padded_and_the_loop_ends_when_all_rows_stop(generator):
    from keras_chargen.sampling import sampling_settings

    prompts = tf.constant(["ANNA:", "ANNA:"])
    greedy = generator.generate(["ANNA:"], 0.0, 100)[0]
    stop = greedy[greedy.index(" ") - 1 : greedy.index(" ") + 1]  # ends at the first space
    ids, lengths = generator.encode(prompts)
    max_new = tf.constant([100, 3])
    state, stop_ids = generator.begin(ids, lengths, max_new, generator.stop_ids(tf.constant([[stop], [""]])))
    new_ids, final = generator.run(state, sampling_settings(2, 0.0), tf.constant([0, 1]), max_new, stop_ids, 100)
    stop_at = greedy.index(stop) + len(stop)
    assert final.count.numpy().tolist() == [stop_at, 3] and final.done.numpy().all()
    assert new_ids.shape == (2, stop_at)  # no step after the last row stopped
    assert (new_ids.numpy()[1, 3:] == 0).all() and (new_ids.numpy()[0] > 0).all()


def test_stop_strings_become_token_sequences_and_match_at_the_end_of_the_generated_ids(generator):
    from keras_chargen.decoding import prepare_stops, push_recent, stop_hit, with_end_ids

    vocab = generator.vocabulary
    e, acute, space = (vocab.index(c) + 1 for c in ("e", "é", " "))
    stops = generator.stop_ids(tf.constant([["é ", "§x"], ["", "e"]])).numpy()  # '§' is unknown: unusable
    assert stops.tolist() == [[[acute, space], [0, 0]], [[0, 0], [e, 0]]]
    prepared = prepare_stops(with_end_ids(stops, ()))
    assert prepared.reversed.numpy()[0, 0, :2].tolist() == [space, acute]  # the last id first
    assert prepared.usable.numpy().tolist() == [[True, False], [False, True]]
    recent = tf.zeros([2, 3], tf.int32)
    hits = []
    for ids in ([acute, e], [space, space], [e, e]):
        recent = push_recent(recent, tf.constant(ids))
        hits.append(stop_hit(recent, prepared).numpy().tolist())
    assert hits == [[False, True], [True, False], [False, True]]
    inner = prepare_stops(tf.constant([[[0, e, 0]]]))  # a 0 before the last non-zero id never matches
    assert inner.usable.numpy().tolist() == [[False]]
    ended = with_end_ids(tf.constant([[[e]]]), (7,)).numpy()
    assert ended.tolist() == [[[e, 0], [7, 0]]]  # a zero column, then the end marker as a sequence of its own


def test_graph_rejects_bad_sampling_settings_too(generator):
    args = (tf.constant(["A"]), tf.constant([1.0]), tf.constant([3]), tf.constant([0]))
    for kwargs, message in [
        (dict(top_k=tf.constant([-1])), r"top_k must be an integer >= 0 \(0 = off\)"),
        (dict(top_p=tf.constant([0.0])), r"top_p must be a number in \(0, 1\]"),
        (dict(top_p=tf.constant([1.5])), r"top_p must be a number in \(0, 1\]"),
        (dict(repetition_penalty=tf.constant([0.0])), "repetition_penalty must be a finite number > 0"),
        (dict(repetition_penalty=tf.constant([np.nan])), "repetition_penalty must be a finite"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            generator(*args, **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_chars must be an integer in 0..100000"):
        generator(args[0], args[1], tf.constant([-2]), args[3])
