"""A character n-gram baseline with interpolated absolute discounting, to put model losses in context."""

from __future__ import annotations

import math
from collections import Counter


class CharNGram:
    """Order-n character Markov model, interpolated absolute discounting (D = 0.75 by default).

    P(c | h) = max(N(h c) − D, 0) / N(h) + D · T(h) / N(h) · P(c | h′), where h′ drops the oldest
    character of h and T(h) is the number of distinct characters seen after h; contexts never seen
    fall back to h′, and the base is uniform over the characters seen in training plus one unknown.

    Args:
        order: int >= 1, characters per n-gram (the context is `order - 1` characters).
        discount: float in (0, 1), the absolute discount D.

    Example:
    >>> model = CharNGram(order=3).fit("abcabcabc")
    >>> round(model.nats_per_char("abcabc"), 3) < round(CharNGram(order=1).fit("abcabcabc").nats_per_char("abcabc"), 3)
    True
    """

    def __init__(self, order: int = 5, discount: float = 0.75) -> None:
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be a positive integer; got {order!r}")
        if not 0.0 < discount < 1.0:
            raise ValueError(f"discount must be in (0, 1); got {discount!r}")
        self.order, self.discount = order, discount
        self.counts: Counter[str] = Counter()  # n-gram (context + char) -> count, all lengths 1..order
        self.totals: Counter[str] = Counter()  # context -> count of n-grams that extend it
        self.types: Counter[str] = Counter()  # context -> distinct characters seen after it
        self.vocab_size = 1

    def fit(self, text: str) -> CharNGram:
        """Count every n-gram of length 1..order in `text`."""
        for length in range(1, self.order + 1):
            grams = Counter(text[i : i + length] for i in range(len(text) - length + 1))
            self.counts.update(grams)
            for gram, count in grams.items():
                self.totals[gram[:-1]] += count
                self.types[gram[:-1]] += 1
        self.vocab_size = len(set(text)) + 1
        return self

    def prob(self, context: str, char: str) -> float:
        """P(char | the last `order - 1` characters of context)."""
        p = 1.0 / self.vocab_size
        context = context[len(context) - self.order + 1 :] if self.order > 1 else ""
        for k in range(len(context) + 1):  # from the empty context up to the longest
            h = context[len(context) - k :] if k else ""
            total = self.totals.get(h, 0)
            if total:
                seen = max(self.counts.get(h + char, 0) - self.discount, 0.0)
                p = (seen + self.discount * self.types[h] * p) / total
        return p

    def nats_per_char(self, text: str, start: int = 0) -> float:
        """Mean −ln P of `text[start:]`, each character predicted from the characters before it."""
        if start >= len(text):
            raise ValueError("nothing to score")
        n = self.order - 1
        return -sum(math.log(self.prob(text[max(0, i - n) : i], text[i])) for i in range(start, len(text))) / (
            len(text) - start
        )
