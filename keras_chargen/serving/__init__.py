"""A local server that speaks TensorFlow Serving's REST and gRPC APIs over an exported model base path.

`serve("exported/NAME")` polls the numeric version folders (TF Serving's version policies) and
answers `/v1/models/NAME...` status, metadata and predict requests, and the gRPC
`PredictionService` / `ModelService`, as TF Serving does; `:stream` (server-sent events over the
`step` signature) and the playground page at `/` are extensions. See docs/serving.md.
"""

import importlib
from typing import Any

# Imported lazily (PEP 562): `keras-chargen serve --help` reads `ServingConfig` without loading TensorFlow.
_EXPORTS = {
    "ModelRepository": "repository",
    "RequestError": "errors",
    "ServableVersion": "repository",
    "ServingApp": "app",
    "ServingConfig": "config",
    "ServingCore": "core",
    "VersionPolicy": "repository",
    "create_app": "app",
    "serve": "server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_chargen.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"keras_chargen.serving.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
