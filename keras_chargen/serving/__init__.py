"""A local server that speaks TensorFlow Serving's REST and gRPC APIs over an exported model base path.

`serve("exported/NAME")` polls the numeric version folders (TF Serving's version policies) and
answers `/v1/models/NAME...` status, metadata and predict requests, and the gRPC
`PredictionService` / `ModelService`, as TF Serving does; `:stream` (server-sent events over the
`step` signature) and the playground page at `/` are extensions. See docs/serving.md.
"""

from keras_chargen.serving.app import ServingApp, create_app
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.repository import ModelRepository, ServableVersion, VersionPolicy
from keras_chargen.serving.server import serve

__all__ = [
    "ModelRepository",
    "RequestError",
    "ServableVersion",
    "ServingApp",
    "ServingConfig",
    "VersionPolicy",
    "create_app",
    "serve",
]
