import math

import pytest
from conftest import CORPUS, SHAKESPEARE, needs_shakespeare

from keras_chargen.ngram import CharNGram


def test_probabilities_sum_to_one_and_longer_context_helps():
    text = CORPUS.read_text()[:20_000]
    model = CharNGram(order=4).fit(text)
    chars = sorted(set(text))
    for context in ["", "Th", "The k", "zzz", "ANNA:\n"]:
        total = sum(model.prob(context, c) for c in chars) + model.prob(context, "\x00")  # + unseen mass
        assert total == pytest.approx(1.0, abs=1e-9)
    split = 18_000
    unigram = CharNGram(order=1).fit(text[:split]).nats_per_char(text, split)
    fourgram = CharNGram(order=4).fit(text[:split]).nats_per_char(text, split)
    assert fourgram < 0.6 * unigram
    assert unigram < math.log(len(set(text)) + 1)  # better than uniform


def test_bad_arguments():
    with pytest.raises(ValueError, match="order must be a positive integer"):
        CharNGram(order=0)
    with pytest.raises(ValueError, match="discount must be in"):
        CharNGram(discount=1.0)


@needs_shakespeare
def test_order_5_on_tiny_shakespeare_matches_the_known_anchor():
    text = SHAKESPEARE.read_text()
    split = len(text) - round(len(text) * 0.1)
    nats = CharNGram(order=5).fit(text[:split]).nats_per_char(text, split)
    assert nats == pytest.approx(1.692, abs=0.03)  # measured independently on this corpus (TF_FACTS)
