"""Scale-out training with `tf.distribute`: the strategy, per-replica stream datasets, per-replica RNN states.

Nothing here replaces what TensorFlow does: Keras `fit` runs under a `MirroredStrategy` (several
devices on one host) or a `MultiWorkerMirroredStrategy` (several hosts, configured by `TF_CONFIG`).
This module adds what the character-level stream layout needs on top:

- every replica receives fixed rows of each global batch (`distribute_rows`), so in the stateful
  layout replica r owns streams `r*b … (r+1)*b - 1` for the whole epoch;
- Keras 3 creates a stateful RNN's state as a `MirroredVariable` with aggregation NONE, and TF
  updates such a variable in replica context on the local device only: each replica carries its own
  state. Reads and writes from outside a replica (backups, resume, random resets) would see or
  overwrite replica 0's copy only; `ReplicaStates` reads and writes all replicas instead;
- Keras clips gradients before the cross-replica all-reduce (each replica's partial gradient);
  `AllReduceClipAdam` clips the summed gradient, as a single device would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_chargen.config import STRATEGIES
from keras_chargen.errors import ChargenError


def configure_logical_cpus(count: int) -> None:
    """Split the first CPU into `count` logical devices (must run before TensorFlow initialises its devices)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # already initialised: fine only if it already has that many
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise ChargenError(
                f"logical_cpus={count} must be set before TensorFlow initialises its devices; "
                "start a new process (the CLI does this by itself)"
            ) from None


def make_strategy(name: str, logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The `tf.distribute` strategy named by `--strategy`.

    Args:
        name: str, `default` (the current strategy, one device), `mirrored` (every local GPU, or every
            logical CPU when there is no GPU) or `multiworker` (the cluster described by `TF_CONFIG`).
        logical_cpus: int, default 0; when > 1, split the CPU into this many logical devices first.
    """
    if name not in STRATEGIES:
        raise ChargenError(f"strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    if logical_cpus > 1:
        configure_logical_cpus(logical_cpus)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy(None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")])
    cluster = _tf_config_cluster()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as err:
        raise ChargenError(
            f"cannot start the multi-worker strategy for cluster {cluster}: {str(err).splitlines()[0][:300]}"
        ) from None


def _tf_config_cluster() -> dict:
    """The `cluster` of `TF_CONFIG`, checked enough to give a clear error instead of a TensorFlow one."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ChargenError(
            "--strategy multiworker needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}); see docs/distributed.md'
        )
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        index, kind = int(task["index"]), task["type"]
        if kind not in cluster or not 0 <= index < len(cluster[kind]):
            raise KeyError(f"task {kind}:{index} is not in the cluster")
    except (ValueError, KeyError, TypeError) as err:
        raise ChargenError(
            f"invalid TF_CONFIG ({err}): it must be JSON with 'cluster' (job → list of "
            "host:port) and 'task' ({'type': job, 'index': i} within that job)"
        ) from None
    return cluster


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Worker processes taking part (1 unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return sum(len(tasks) for job, tasks in spec.items() if job in ("chief", "worker")) or 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the model directory: always on one host; the chief (or worker 0) in a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or num_workers(strategy) == 1:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def write_dir(model_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: `model_dir` on the chief, a temporary `model_dir/workertemp_<id>` elsewhere.

    As in the Keras multi-worker guide: every worker runs the same callbacks (they take part in the
    same collectives), but only the chief's files are kept; the others are deleted after training.
    """
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return model_dir / f"workertemp_{resolver.task_type}_{resolver.task_id}"


def replica_batch_size(strategy: tf.distribute.Strategy, global_batch: int) -> int:
    """Rows of the global batch each replica gets; the global batch must split evenly."""
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ChargenError(
            f"batch_size {global_batch} does not split evenly over {replicas} replicas; use a multiple of {replicas}"
        )
    return global_batch // replicas


def distribute_rows(strategy: tf.distribute.Strategy, make_dataset: Callable[[], tf.data.Dataset], global_batch: int):
    """A distributed dataset in which global replica r always gets rows `r*b … (r+1)*b - 1` of each global batch.

    `make_dataset()` yields global batches `(inputs, targets)` of `global_batch` rows (the same
    on every worker: the pipelines are deterministic). Each worker's input function takes the rows
    of its local replicas and re-batches them per replica; `tf.distribute` hands consecutive
    elements to the local replicas in order, so element `n*k + l` goes to local replica l. Repeated
    forever: pass `steps_per_epoch` / `validation_steps` to `fit` (Keras then keeps one iterator
    across epochs, and every epoch consumes exactly one pass).
    """
    per_replica = replica_batch_size(strategy, global_batch)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first, rows = context.input_pipeline_id * local * per_replica, local * per_replica
        dataset = make_dataset().map(lambda x, y: (x[first : first + rows], y[first : first + rows]))
        dataset = dataset.unbatch().batch(per_replica, drop_remainder=True)  # (per_replica, seq_len) each
        return dataset.repeat().prefetch(tf.data.AUTOTUNE)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


def unpin_strategy(model: keras.Model) -> None:
    """Let `model` take its strategy from the enclosing `strategy.scope()` instead of pinning it at creation.

    A Keras 3 model created under a strategy runs `_maybe_symbolic_build` at the start of `fit`: it
    pulls one batch from a throw-away iterator and averages it with `strategy.reduce`, which fails
    under `MultiWorkerMirroredStrategy` for `(inputs, targets)` batches (keras-team/keras#20585,
    "Attempt to convert a value (PerReplica...)") and, with `MirroredStrategy`, advances a shuffled
    dataset to its second order. A model without a pinned strategy builds lazily when its train
    function is traced, and `model.distribute_strategy` is then the current one: call `fit` inside
    `strategy.scope()`. The optimizer's variables are created here, under the current scope: created
    lazily inside the traced train step they would fail ("You must feed a value for placeholder").
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model._distribute_strategy = None  # the attribute Keras' TensorFlow trainer checks (keras 3.15)
    if num_workers(tf.distribute.get_strategy()) > 1:
        # Keras reduces each step's logs across workers with `strategy.reduce("MEAN", v, axis=0)`, which
        # fails on scalars; the metrics are already synchronised, so a (1,) shape makes it a no-op mean.
        model.train_step = _vector_logs(model.train_step)
        model.test_step = _vector_logs(model.test_step)


def _vector_logs(step: Callable) -> Callable:
    def vector_step(data):
        return {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    return vector_step


class ReplicaStates:
    """The carried states of a stateful model as global `(batch_size, units)` arrays, in stream order.

    Under a strategy each replica holds the states of its own rows; this reads them from all replicas
    (an all-gather, so in a cluster every worker must call `read` at the same point) and writes each
    replica its slice. Without a strategy it reads and writes the variables directly.

    Args:
        model: keras.Model, a stateful model from `build_model` (built, e.g. after `compile`).
    """

    def __init__(self, model: keras.Model) -> None:
        from keras_chargen.model import stateful_layers

        self.variables = [v for layer in stateful_layers(model) for v in layer.states]
        self.strategy = model.distribute_strategy
        self.replicas = self.strategy.num_replicas_in_sync
        self.rows = int(self.variables[0].shape[0]) if self.variables else 0  # per replica
        distributed = self.replicas > 1
        self._gather = tf.function(self._gather_fn) if distributed else None
        self._assign = tf.function(self._assign_fn) if distributed else None
        self._mask = tf.function(self._mask_fn) if distributed else None

    @property
    def batch_size(self) -> int:
        """Streams over all replicas."""
        return self.rows * self.replicas

    def _local_slice(self, value: tf.Tensor) -> tf.Tensor:
        start = tf.distribute.get_replica_context().replica_id_in_sync_group * self.rows
        return value[start : start + self.rows]

    def _gather_fn(self) -> list[tf.Tensor]:
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return [context.all_gather(tf.identity(v.value), axis=0) for v in self.variables]  # (batch, units)

        gathered = self.strategy.run(replica_fn)
        return [self.strategy.experimental_local_results(value)[0] for value in gathered]

    def _assign_fn(self, values: list[tf.Tensor]) -> None:
        def replica_fn():
            for variable, value in zip(self.variables, values):
                variable.assign(self._local_slice(value))  # this replica's copy only (aggregation NONE)

        self.strategy.run(replica_fn)

    def _mask_fn(self, keep: tf.Tensor) -> None:
        def replica_fn():
            mask = self._local_slice(keep)[:, None]  # (rows, 1)
            for variable in self.variables:
                variable.assign(variable.value * mask)

        self.strategy.run(replica_fn)

    def read(self) -> list[np.ndarray]:
        """The states, each `(batch_size, units)`."""
        if self._gather is None or not self.variables:
            return [v.numpy() for v in self.variables]
        return [value.numpy() for value in self._gather()]

    def write(self, values: list[np.ndarray]) -> None:
        """Set the states from global `(batch_size, units)` arrays (as returned by `read`)."""
        if self._assign is None:
            for variable, value in zip(self.variables, values):
                variable.assign(value)
            return
        self._assign([tf.constant(v, tf.float32) for v in values])

    def keep_rows(self, keep: np.ndarray) -> None:
        """Zero the states of the streams where `keep` (shape `(batch_size,)`) is 0, in every layer."""
        keep = keep.astype(np.float32)
        if self._mask is None:
            for variable in self.variables:
                variable.assign(variable.numpy() * keep[:, None])
            return
        self._mask(tf.constant(keep))


def workers_agree(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True if `flag` is true on any worker (an all-reduce, so every worker must call it); `flag` with one worker."""
    if num_workers(strategy) == 1:
        return flag
    value = strategy.run(lambda: tf.constant(float(flag)))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None).numpy() > 0)


class AllReduceClipAdam(keras.optimizers.Adam):
    """Adam that clips the all-reduced gradient (`clipnorm` per variable, as `keras.optimizers.Adam` does).

    Keras 3 clips inside each replica, before the gradients are summed across replicas, so with R
    replicas the effective threshold grows up to R-fold and the update differs from one device's.
    This moves the clipping after the all-reduce. It overrides two private Keras methods; the
    constructor checks that they still exist (a test compares against a single-device run).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not (
            hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients")
            and hasattr(keras.optimizers.Adam, "_clip_gradients")
        ):
            raise ChargenError(
                f"this Keras ({keras.__version__}) has no Optimizer._all_reduce_sum_gradients; "
                "keras_chargen.distribute.AllReduceClipAdam needs updating"
            )

    def _clip_gradients(self, grads):
        return grads  # clipped after the all-reduce instead

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = super()._all_reduce_sum_gradients(grads_and_vars)
        present = [(g, v) for g, v in reduced if g is not None]
        clipped = iter(keras.optimizers.Adam._clip_gradients(self, [g for g, _ in present]))
        return [(next(clipped) if g is not None else None, v) for g, v in reduced]
