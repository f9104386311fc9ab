"""Test helper: run `:stream` requests in-process through the real `StreamScheduler` (no HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.repository import ServableVersion
from keras_chargen.serving.streaming import ENCODE, StreamScheduler, parse_stream_request


def stream_texts(version_dir: Path, requests: list[dict[str, Any]]) -> list[str]:
    """The joined text of each `:stream` request body, all open at once on one scheduler."""
    servable = ServableVersion.load("model", int(version_dir.name), version_dir)
    config = ServingConfig(max_new_chars=2000, max_streams=len(requests))
    scheduler = StreamScheduler(len(requests))
    scheduler.start()

    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        sessions = []
        for body in requests:
            params = parse_stream_request(body, config)
            encoded = servable.run(ENCODE, {"prompt": np.array([params["prompt"].encode("utf-8")], dtype=object)})
            ids = encoded["ids"][0][: int(encoded["lengths"][0])]
            sessions.append(scheduler.open(servable, ids, params, loop))
        texts = []
        for session in sessions:
            texts.append("".join([piece async for piece in session.pieces()]))
        return texts

    try:
        return asyncio.run(run())
    finally:
        scheduler.stop()
