"""Test helper: run `:stream` requests in-process through the real `StreamScheduler` (no HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.repository import ServableVersion
from keras_chargen.serving.streaming import StreamScheduler, check_streamable, parse_stream_request


def stream_results(version_dir: Path, requests: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    """(joined text, seed of the `done` event) of each `:stream` request body, all open at once on one scheduler."""
    servable = ServableVersion.load("model", int(version_dir.name), version_dir)
    check_streamable(servable)
    config = ServingConfig(max_new_chars=2000, max_streams=len(requests))
    scheduler = StreamScheduler(len(requests))
    scheduler.start()

    async def run() -> list[tuple[str, int | None]]:
        loop = asyncio.get_running_loop()
        sessions = [scheduler.open(servable, parse_stream_request(body, config), loop) for body in requests]
        results = []
        for session in sessions:
            text = "".join([piece async for piece in session.pieces()])
            results.append((text, session.finished.seed if session.finished else None))
        return results

    try:
        return asyncio.run(run())
    finally:
        scheduler.stop()


def stream_texts(version_dir: Path, requests: list[dict[str, Any]]) -> list[str]:
    """The joined text of each `:stream` request body, all open at once on one scheduler."""
    return [text for text, _ in stream_results(version_dir, requests)]
