"""TF Serving's gRPC API beside REST: `PredictionService.Predict`, `GetModelMetadata`, `ModelService.GetModelStatus`.

The services are the stubs of `tensorflow-serving-api` (the package TF Serving's own Python clients
use) served by `grpcio`. Predict goes through the same versions, validation, caps and batching as
REST (`ServingApp.run_predict`, on the server's event loop); errors are gRPC status codes with the
REST error's message (`RequestError.grpc_code`: INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, ...).
Inputs must have the signature's dtype, as on TF Serving (`seed` is int32:
`tf.make_tensor_proto([1], tf.int32)`); inputs with a default may be left out, as over REST.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    status_pb2,
)

from keras_chargen.contract import DEFAULT_SIGNATURE
from keras_chargen.errors import ChargenError
from keras_chargen.serving import protocol
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.repository import ServableVersion

if TYPE_CHECKING:
    from keras_chargen.serving.app import ServingApp

logger = logging.getLogger("keras_chargen.serving")

SIGNATURE_DEF = "signature_def"
_ERROR_CODES = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type  # tensorflow.error.Code
_THREADS = 64  # RPCs running at once (each waits on the event loop); more queue, up to max_connections


def _fail(context: grpc.ServicerContext, err: RequestError) -> None:
    """End the RPC with the gRPC code and message of `err` (raises, as `context.abort` does)."""
    context.abort(getattr(grpc.StatusCode, err.grpc_code), err.message)


def _model_spec(spec: Any) -> tuple[str, int | None]:
    """(name, version or None) of a `ModelSpec`; version labels are a 400 (this server has none)."""
    if spec.WhichOneof("version_choice") == "version_label":
        raise RequestError(400, f"version labels are not supported by this server; got {spec.version_label!r}")
    version = spec.version.value if spec.HasField("version") else None
    return spec.name, version


def decode_tensors(tensors: Any, specs: dict[str, tf.TensorSpec], defaults: dict[str, Any]) -> dict[str, np.ndarray]:
    """Numpy inputs from a `PredictRequest.inputs` map, checked against the signature like REST's."""
    protocol.check_keys(dict(tensors), list(specs), "PredictRequest inputs", defaults)
    arrays = {}
    for name, spec in specs.items():
        if name not in tensors:
            arrays[name] = protocol.to_array([defaults[name]], spec, name, row_format=False)
            continue
        proto = tensors[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "no dtype"
            raise RequestError(400, f"input {name} has dtype {got}; the signature expects {spec.dtype.name}")
        try:
            array = tf.make_ndarray(proto)
        except (ValueError, TypeError) as err:
            raise RequestError(400, f"input {name} is not a valid TensorProto: {err}") from None
        if not spec.shape.is_compatible_with(array.shape):
            raise RequestError(
                400,
                f"input {name} has shape {list(array.shape)}; the signature expects {protocol.shape_str(spec.shape)}",
            )
        arrays[name] = array
    return arrays


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: GrpcServer) -> None:
        self.server = server

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self.server.call(context, self.server.predict(request))

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            return self.server.metadata(request)
        except RequestError as err:
            _fail(context, err)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: GrpcServer) -> None:
        self.server = server

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            return self.server.status(request)
        except RequestError as err:
            _fail(context, err)


class GrpcServer:
    """The gRPC port: bound at construction (so a taken port fails before serving), started with the app.

    Args:
        host: str, interface to listen on (the REST server's).
        port: int, TCP port (TF Serving's gRPC port is 8500).
        config: ServingConfig, `max_body_bytes` (largest request message), `max_connections`
            (RPCs at once; beyond: RESOURCE_EXHAUSTED), `header_timeout` (handshake), `idle_timeout`.

    Example:
    >>> grpc_server = GrpcServer("127.0.0.1", 8500, ServingConfig())  # doctest: +SKIP
    >>> grpc_server.start(serving_app, loop)  # from the app's lifespan  # doctest: +SKIP
    """

    def __init__(self, host: str, port: int, config: ServingConfig) -> None:
        options = [
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.server_handshake_timeout_ms", int(config.header_timeout * 1000)),
            ("grpc.max_connection_idle_ms", int(config.idle_timeout * 1000)),
            ("grpc.max_allowed_incoming_connections", config.max_connections),
        ]
        self._executor = concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="grpc")
        self.server = grpc.server(self._executor, options=options, maximum_concurrent_rpcs=config.max_connections)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise ChargenError(f"cannot listen for gRPC on {address}: the port is taken or the address is not local")
        self.app: ServingApp | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped: Any = None  # the grpc.Server.stop() event

    @property
    def started(self) -> tuple[ServingApp, asyncio.AbstractEventLoop]:
        """The app and event loop given to `start`."""
        if self.app is None or self.loop is None:
            raise RuntimeError("the gRPC server has not been started")
        return self.app, self.loop

    def start(self, app: ServingApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), self.server)
        self.server.start()

    def stop(self, grace: float) -> None:
        """Refuse new RPCs; those in flight get `grace` seconds (the app aborts them before that)."""
        if self._stopped is None:
            self._stopped = self.server.stop(grace)

    def wait_stopped(self) -> None:
        self.stop(0)
        self._stopped.wait()
        self._executor.shutdown(wait=False)

    def call(self, context: grpc.ServicerContext, work: Coroutine) -> Any:
        """Run `work` on the app's event loop; cancel it if the client goes away; map errors to codes."""
        future = asyncio.run_coroutine_threadsafe(work, self.started[1])

        def on_rpc_end() -> None:
            if not future.done():
                logger.info("gRPC client %s went away; its generation was cancelled", context.peer())
                future.cancel()

        context.add_callback(on_rpc_end)
        try:
            return future.result()
        except RequestError as err:
            _fail(context, err)
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "the request was cancelled")

    async def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        name, version = _model_spec(request.model_spec)
        servable = self.started[0].repo.get(name, version)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        specs = servable.input_specs(signature)
        inputs = decode_tensors(request.inputs, specs, protocol.defaults_for(signature, specs))
        outputs = await self.started[0].run_predict(servable, signature, inputs)
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec, servable, signature)
        for alias in self._output_names(request, servable, signature, outputs):
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
        return response

    @staticmethod
    def _output_names(request: Any, servable: ServableVersion, signature: str, outputs: dict) -> list[str]:
        """`output_filter` checked as TF Serving checks it (predict_util.cc); all outputs when empty."""
        chosen: list[str] = []
        for alias in request.output_filter:
            if alias not in outputs:
                raise RequestError(
                    400,
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(outputs))}}}.",
                )
            if alias in chosen:
                raise RequestError(400, f"duplicate output tensor alias: {alias}")
            chosen.append(alias)
        return chosen or sorted(outputs)

    @staticmethod
    def _fill_spec(spec: Any, servable: ServableVersion, signature: str) -> None:
        spec.name = servable.name
        spec.version.value = servable.version
        spec.signature_name = signature

    def metadata(self, request: Any) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """TF Serving's GetModelMetadata: only the `signature_def` field (get_model_metadata_impl.cc)."""
        fields = list(request.metadata_field)
        if not fields:
            raise RequestError(400, "GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != SIGNATURE_DEF:
                raise RequestError(400, f"Metadata field {field} is not supported")
        name, version = _model_spec(request.model_spec)
        servable = self.started[0].repo.get(name, version)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, proto in servable.signature_protos.items():
            signatures.signature_def[key].CopyFrom(proto)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response

    def status(self, request: Any) -> get_model_status_pb2.GetModelStatusResponse:
        """TF Serving's GetModelStatus: every version's state (or one), with its load error if it failed."""
        if not request.HasField("model_spec"):
            raise RequestError(400, "Missing ModelSpec")
        name, version = _model_spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.started[0].repo.status(name, version):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
            entry.status.error_code = (
                type(entry.status)
                .DESCRIPTOR.fields_by_name["error_code"]
                .enum_type.values_by_name[status.error_code]
                .number
            )
            entry.status.error_message = status.error_message
        return response
