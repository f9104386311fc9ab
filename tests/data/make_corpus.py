"""Regenerate tests/data/corpus.txt: a small deterministic play-like text (with some non-ASCII).

It has the structure a character model can learn quickly (names, line breaks, common words),
so tests can check learning on a fresh clone without ../shared.
"""

import random
from pathlib import Path

NAMES = ["ANNA", "BRUNO", "CÉLINE", "DMITRI", "ÉLODIE"]
SUBJECTS = ["the king", "my lord", "the garden", "our ship", "this night", "the café", "a naïve friend", "the river"]
VERBS = ["is", "was", "shall be", "seems", "will be", "remains"]
ADJECTIVES = ["quiet", "bright", "cold", "lost", "golden", "strange", "sweet", "near"]
ENDINGS = [".", "!", "?", ", and so it goes.", ", I think."]


def main(path: Path = Path(__file__).with_name("corpus.txt"), size: int = 60_000) -> None:
    rng = random.Random(1234)
    parts = []
    while sum(map(len, parts)) < size:
        lines = []
        for _ in range(rng.randint(1, 3)):
            s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}{rng.choice(ENDINGS)}"
            lines.append(s[0].upper() + s[1:])
        parts.append(f"{rng.choice(NAMES)}:\n" + "\n".join(lines) + "\n\n")
    path.write_text("".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
