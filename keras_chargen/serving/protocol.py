"""TensorFlow Serving's REST JSON, both ways: request bodies → numpy inputs, outputs → response bodies.

Follows TF Serving's `json_tensor.cc`: the row format (`"instances": [...]`, one entry per batch
row, objects keyed by input name when the signature has several inputs) and the columnar format
(`"inputs": {...}`, whole tensors); strings as JSON strings or `{"b64": ...}`; `NaN`/`Infinity`
accepted; row requests answered with `"predictions"`, columnar ones with `"outputs"`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import numpy as np
import tensorflow as tf

from keras_chargen.contract import DEFAULT_SIGNATURE
from keras_chargen.serving.config import ServingConfig
from keras_chargen.serving.errors import RequestError
from keras_chargen.serving.repository import ServableVersion, VersionStatus
from keras_chargen.settings import SETTINGS, offs

ROW, COLUMNAR = "row", "columnar"
_JSON_TYPES = {
    type(None): "Null",
    bool: "Bool",
    dict: "Object",
    list: "Array",
    str: "String",
    int: "Number",
    float: "Number",
}


_MAX_INT_DIGITS = 40  # more than any int64/uint64 needs; Python refuses past 4300 digits


class _HugeNumber(ValueError):
    """An integer literal too long for any tensor type (raised from inside `json.loads`)."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _HugeNumber(f"JSON Parse error: an integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's top-level JSON object; 400 `JSON Parse error` or `Is not object` otherwise."""
    if not body.strip():
        raise RequestError(400, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(body, parse_int=_parse_int)
    except _HugeNumber as err:
        raise RequestError(400, f"{err} (integers fit in 64 bits)") from None
    except UnicodeDecodeError as err:
        raise RequestError(
            400, f"JSON Parse error: the body is not UTF-8 ({err.reason} at offset {err.start})"
        ) from None
    except json.JSONDecodeError as err:
        raise RequestError(400, f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except RecursionError:
        raise RequestError(400, "JSON Parse error: nested too deeply") from None
    if not isinstance(doc, dict):
        raise RequestError(400, f"JSON Value: {_short(doc)} Is not object")
    return doc


def signature_of(doc: Mapping[str, Any]) -> str:
    """`signature_name` of a predict request, `serving_default` when absent or empty."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise RequestError(400, f"'signature_name' key must be a string value; got {_short(name)}")
    return name or DEFAULT_SIGNATURE


def defaults_for(signature: str, specs: Mapping[str, tf.TensorSpec]) -> dict[str, Any]:
    """The inputs of `signature` a request may leave out, with their values: the sampling inputs of
    `serving_default` at their off values (an extension: TF Serving requires every input)."""
    if signature != DEFAULT_SIGNATURE:
        return {}
    return {name: value for name, value in offs().items() if name in specs}


def decode_inputs(
    doc: Mapping[str, Any], specs: Mapping[str, tf.TensorSpec], defaults: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, np.ndarray]]:
    """(format, input name → array) from a predict request body, checked against the signature's specs.

    Inputs named in `defaults` may be left out: every row gets the default value (columnar: `[value]`,
    which the graph broadcasts over the rows).
    """
    defaults = defaults or {}
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows and has_columns:
        raise RequestError(400, "Not formatted correctly: expecting only one of 'inputs' or 'instances' keys")
    if has_rows:
        return ROW, _decode_instances(doc["instances"], specs, defaults)
    if has_columns:
        return COLUMNAR, _decode_columns(doc["inputs"], specs, defaults)
    raise RequestError(400, "Missing 'inputs' or 'instances' key")


def _decode_instances(
    instances: Any, specs: Mapping[str, tf.TensorSpec], defaults: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Row format: one list entry per batch row; entries are objects keyed by input name."""
    if not isinstance(instances, list):
        raise RequestError(400, f"Expecting 'instances' to be a list/array; got {_json_type(instances)}")
    if not instances:
        raise RequestError(400, "No values in 'instances' array")
    names = list(specs)
    by_name = len(specs) > 1 or _is_object(instances[0])
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for i, item in enumerate(instances):
        if not by_name:
            if _is_object(item):
                raise RequestError(400, f"Expecting value/list but got object at item {i} of 'instances' list")
            columns[names[0]].append(item)
            continue
        if not _is_object(item):
            raise RequestError(
                400,
                f"Failed to process element: {i} of 'instances' list: expecting an object "
                f"with keys {', '.join(names)}; got {_json_type(item)}",
            )
        check_keys(item, names, f"Failed to process element: {i} of 'instances' list", defaults)
        for name in names:
            columns[name].append(item[name] if name in item else defaults[name])
    arrays = {}
    for name, spec in specs.items():
        if spec.shape.rank == 0:
            raise RequestError(400, f"input {name} is a scalar; send it in the columnar 'inputs' format")
        arrays[name] = to_array(columns[name], spec, name, row_format=True)
    return arrays


def _decode_columns(
    inputs: Any, specs: Mapping[str, tf.TensorSpec], defaults: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Columnar format: whole tensors, an object keyed by input name (or a bare value for one input)."""
    names = list(specs)
    if not _is_object(inputs):
        if len(names) > 1:
            raise RequestError(
                400,
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors are required: {', '.join(names)}",
            )
        inputs = {names[0]: inputs}
    check_keys(inputs, names, "'inputs' object", defaults)
    return {
        name: to_array(inputs[name] if name in inputs else [defaults[name]], spec, name, row_format=False)
        for name, spec in specs.items()
    }


def check_keys(item: Mapping[str, Any], names: list[str], where: str, defaults: Mapping[str, Any]) -> None:
    missing = [name for name in names if name not in item and name not in defaults]
    unknown = [key for key in item if key not in names]
    if missing or unknown:
        parts = ([f"missing input {', '.join(missing)}"] if missing else []) + (
            [f"unknown input {', '.join(map(repr, unknown))}"] if unknown else []
        )
        required = [name for name in names if name not in defaults]
        optional = f"; optional: {', '.join(defaults)}" if defaults else ""
        raise RequestError(400, f"{where}: {'; '.join(parts)} (the signature takes {', '.join(required)}{optional})")


def to_array(value: Any, spec: tf.TensorSpec, name: str, row_format: bool) -> np.ndarray:
    """A dense numpy array of `spec`'s dtype from nested JSON lists; 400 naming the element on any mismatch."""
    shape: list[int] = []
    leaves: list[tuple[tuple[int, ...], Any]] = []
    _walk(value, (), shape, leaves, name, row_format)
    convert = _converter(spec.dtype)
    values = []
    for index, leaf in leaves:
        try:
            values.append(convert(leaf))
        except ValueError as err:
            raise RequestError(
                400, f"{_where(name, index, row_format)}: JSON Value: {_short(leaf)} Type: {_json_type(leaf)} {err}"
            ) from None
    array: np.ndarray
    if spec.dtype == tf.string:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.array(values, dtype=spec.dtype.as_numpy_dtype)
    array = array.reshape(shape)
    if not spec.shape.is_compatible_with(array.shape):
        if row_format:
            raise RequestError(
                400,
                f"Failed to process 'instances' list, key: {name}: each instance's value must "
                f"have shape {shape_str(spec.shape[1:])}; got {list(array.shape[1:])}",
            )
        hint = " (one value per row: wrap it in a list)" if array.ndim + 1 == spec.shape.rank else ""
        raise RequestError(
            400, f"input {name} has shape {list(array.shape)}; the signature expects {shape_str(spec.shape)}{hint}"
        )
    return array


def _walk(
    value: Any,
    index: tuple[int, ...],
    shape: list[int],
    leaves: list[tuple[tuple[int, ...], Any]],
    name: str,
    row_format: bool,
) -> None:
    """Collect the leaves of a nested list and its dense shape; ragged lists are a 400."""
    level = len(index)
    if isinstance(value, list):
        if leaves and level >= len(shape):
            raise RequestError(
                400,
                f"{_where(name, index, row_format)}: list found where a value was expected "
                "(all rows must have the same shape)",
            )
        if level == len(shape):
            shape.append(len(value))
        elif shape[level] != len(value):
            raise RequestError(
                400,
                f"{_where(name, index, row_format)}: list of {len(value)} values where "
                f"{shape[level]} were expected (all rows must have the same shape)",
            )
        for i, item in enumerate(value):
            _walk(item, index + (i,), shape, leaves, name, row_format)
        return
    if level != len(shape):
        raise RequestError(
            400,
            f"{_where(name, index, row_format)}: JSON Value: {_short(value)} found at "
            f"depth {level}; expected a list at that depth (all rows must have the same shape)",
        )
    leaves.append((index, value))


def _converter(dtype: tf.DType) -> Callable[[Any], Any]:
    """Leaf conversion for one dtype, as strict as TF Serving's (no bools as numbers, no 1.5 as int)."""
    if dtype == tf.string:
        return _to_bytes
    if dtype == tf.bool:
        return lambda v: v if isinstance(v, bool) else _type_error(dtype)
    if dtype.is_floating:
        limit = float(np.finfo(dtype.as_numpy_dtype).max)

        def to_float(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                _type_error(dtype)
            if math.isfinite(v) and abs(v) > limit:
                raise ValueError(f"cannot be converted to {dtype.name} without loss of precision")
            return v

        return to_float
    if dtype.is_integer:
        info = np.iinfo(dtype.as_numpy_dtype)

        def to_int(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, int):
                _type_error(dtype)
            if not info.min <= v <= info.max:
                raise ValueError(f"is out of range for {dtype.name}")
            return v

        return to_int
    raise RequestError(501, f"inputs of type {dtype.name} are not supported by this server")


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64 data") from None
    _type_error(tf.string)


def _type_error(dtype: tf.DType) -> NoReturn:
    raise ValueError(f"is not of expected type: {dtype.name}")


def check_caps(inputs: Mapping[str, np.ndarray], config: ServingConfig) -> None:
    """The server's caps on rows, string sizes and `max_new_chars`, and the sampling inputs' ranges; 400s."""
    for name, array in inputs.items():
        if array.ndim and array.shape[0] > config.max_batch:
            raise RequestError(
                400, f"{array.shape[0]} rows in input {name}; this server's cap is {config.max_batch} rows per request"
            )
        if array.dtype == object:
            for value in array.ravel():
                try:
                    size, unit = len(value.decode("utf-8")), "characters"
                except UnicodeDecodeError:
                    size, unit = len(value), "bytes"
                if size > config.max_prompt_chars:
                    raise RequestError(
                        400, f"{name} has {size} {unit}; this server's cap is {config.max_prompt_chars} characters"
                    )
    if "max_new_chars" in inputs and inputs["max_new_chars"].size:
        lengths = inputs["max_new_chars"]
        if lengths.min() >= 0 and lengths.max() > config.max_new_chars:
            raise RequestError(
                400, f"max_new_chars {lengths.max()} is above this server's cap of {config.max_new_chars}"
            )
    check_settings(inputs)


def check_settings(inputs: Mapping[str, np.ndarray]) -> None:
    """400 naming the first value of a sampling input outside its range (`keras_chargen.settings`)."""
    for spec in SETTINGS:
        if spec.name in inputs and inputs[spec.name].size and spec.dtype != "string":
            for value in inputs[spec.name].ravel():
                if not spec.valid(value):
                    raise RequestError(400, f"{spec.name} must be {spec.rule}; got {_number(float(value))}")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def encode_outputs(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """The response body: `{"predictions": [...]}` (row) or `{"outputs": ...}` (columnar), as TF Serving."""
    names = sorted(outputs)
    values = {name: _jsonable(outputs[name], name) for name in names}
    if fmt == COLUMNAR:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = {outputs[name].shape[0] if outputs[name].ndim else 0 for name in names}
    if len(batch) != 1 or 0 in batch:
        raise RequestError(
            400,
            f"outputs {', '.join(names)} do not share one batch dimension "
            f"({sorted(batch)}); use the columnar 'inputs' format",
        )
    rows = batch.pop()
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][i] for name in names} for i in range(rows)]}


def _jsonable(array: np.ndarray, name: str) -> Any:
    """Nested lists of JSON values: UTF-8 strings (b64 objects for `*_bytes` or non-UTF-8), shortest floats."""
    if array.dtype == object:
        flat = [_string_value(v, name.endswith("_bytes")) for v in array.ravel()]
        return _nest(flat, array.shape)
    if array.dtype == np.float32:  # shortest repr that reads back as the same float32, as TF Serving writes
        return _nest([float(str(v)) for v in array.ravel()], array.shape)
    return array.tolist()


def _string_value(value: bytes, as_bytes: bool) -> Any:
    if not as_bytes:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def _nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def status_body(statuses: list[VersionStatus]) -> dict[str, Any]:
    """`GET /v1/models/{name}[/versions/{v}]`: TF Serving's `GetModelStatusResponse` JSON."""
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state,
                "status": {"error_code": s.error_code, "error_message": s.error_message},
            }
            for s in statuses
        ]
    }


def metadata_body(servable: ServableVersion) -> dict[str, Any]:
    """`GET .../metadata`: TF Serving's `GetModelMetadataResponse` JSON (signature defs only)."""
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {"signature_def": servable.signature_defs}},
    }


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def _where(name: str, index: tuple[int, ...], row_format: bool) -> str:
    if row_format and index:
        rest = "".join(f"[{i}]" for i in index[1:])
        return f"Failed to process element: {index[0]} key: {name}{rest} of 'instances' list"
    return f"Failed to process input {name}{''.join(f'[{i}]' for i in index)} of 'inputs' object"


def shape_str(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "any shape"
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + "]"
