"""Caps on one generation call, shared by the generator, the CLI and the server (no TensorFlow here)."""

MAX_NEW_CHARS = 100_000  # cap on characters generated per call (per row)
MAX_PROMPT_CHARS = 100_000  # cap on prompt length for the Python API
MAX_STOP_CHARS = 1_000  # cap on a stop string's length for the Python API
