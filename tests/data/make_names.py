"""Regenerate tests/data/names.txt: 600 made-up names (syllables drawn with a fixed seed), one per line.

A small document-mode corpus (`train --documents`) that needs no download: each line is one
document. The order is shuffled, so the validation split (the last 10 %) is like the rest.
"""

import random
from pathlib import Path

ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl dr fl gr kr sh st th tr".split()
VOWELS = "a e i o u ai ea ie ou y".split()
CODAS = ["", "", "", "n", "r", "l", "s", "th", "nd", "rk", "m", "x"]


def main(path: Path = Path(__file__).with_name("names.txt"), count: int = 600) -> None:
    rng = random.Random(7)
    names: set[str] = set()
    while len(names) < count:
        syllables = rng.choice([1, 2, 2, 2, 3])
        name = "".join(
            rng.choice(ONSETS) + rng.choice(VOWELS) + (rng.choice(CODAS) if i == syllables - 1 else "")
            for i in range(syllables)
        )
        if 3 <= len(name) <= 12:
            names.add(name.capitalize())
    ordered = sorted(names)
    random.Random(8).shuffle(ordered)
    path.write_text("\n".join(ordered) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
