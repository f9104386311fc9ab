"""The corpus shipped inside the package: tiny-shakespeare, trained on when no `--text` / `--tfds` is given.

`tinyshakespeare.txt` is Andrej Karpathy's char-rnn sample corpus (40,000 lines from Shakespeare's
plays; the text is in the public domain), byte for byte the file that TFDS' `tiny_shakespeare`
downloads (same SHA-256). It is package data (`pyproject.toml`, `[tool.setuptools.package-data]`)
and read through `importlib.resources`, so it works from an installed wheel and needs no network.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from importlib import resources

CHUNK_CHARS = 1 << 20  # yield the text 1 Mi characters at a time, as `FileSource` does


@dataclasses.dataclass(frozen=True)
class EmbeddedCorpus:
    """A text file shipped in this package, with where it came from."""

    name: str  # what `describe()` and the CLI call it
    filename: str  # the file beside this module
    url: str  # the original
    size_bytes: int
    sha256: str
    license: str


TINY_SHAKESPEARE = EmbeddedCorpus(
    name="tiny-shakespeare",
    filename="tinyshakespeare.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    size_bytes=1_115_394,
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    license="public domain (Shakespeare's plays)",
)


@dataclasses.dataclass(frozen=True)
class EmbeddedSource:
    """A `TextSource` over a corpus shipped in the package (default: tiny-shakespeare).

    Example:
    >>> text = "".join(EmbeddedSource().chunks())
    >>> len(text), text[:14]
    (1115394, 'First Citizen:')
    """

    corpus: EmbeddedCorpus = TINY_SHAKESPEARE

    def read_bytes(self) -> bytes:
        """The file's bytes, from the installed package."""
        return resources.files(__name__).joinpath(self.corpus.filename).read_bytes()

    def chunks(self) -> Iterator[str]:
        raw = resources.files(__name__).joinpath(self.corpus.filename).open("rb")
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
            while chunk := f.read(CHUNK_CHARS):
                yield chunk

    def describe(self) -> str:
        return f"embedded:{self.corpus.name}"
