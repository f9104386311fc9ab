"""`keras-chargen train|generate|evaluate|export|serve|bench|inspect`: argument parsing over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_chargen.config import CHOICES, ENCODING_ERRORS, ChargenConfig, flag_name
from keras_chargen.errors import ChargenError, describe_os_error
from keras_chargen.quiet import VERBOSE_ENV, quiet_tensorflow_start

if TYPE_CHECKING:  # TensorFlow loads only once a command runs
    from keras_chargen.inspection import Inspection

# Sampling settings whose `generate` flag is not simply --setting-name.
GENERATE_FLAGS = {"max_new_chars": "--length"}


class UsageError(ChargenError):
    """A bad flag value: printed under the command's usage line, like argparse's own errors (exit 2)."""


def named_by_flag(err: ChargenError, names: Collection[str], flag: Callable[[str], str] = flag_name) -> UsageError:
    """`err` (whose message starts with a setting's name, e.g. `units must be ...`) as a `UsageError`
    that starts with the flag the user typed instead (`--units must be ...`)."""
    message = str(err)
    match = re.match(r"\w+", message)
    if match and match[0] in names:
        message = flag(match[0]) + message[match.end() :]
    return UsageError(message)


def _no_default(value: Any) -> bool:
    """Whether a default is "nothing" to a user (None, False, an empty string or list): help does not show it."""
    return (
        value is None or value is False or value is argparse.SUPPRESS or (not value and isinstance(value, (str, list)))
    )


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each flag with its default when it has one a user could type (never `None`,
    `False` or an empty string)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text or not action.option_strings or _no_default(default):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


def _add_corpus_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "corpus (--text or --tfds; with neither, the embedded tiny-shakespeare, 1.1 MB, no download)"
    )
    group.add_argument("--text", nargs="+", metavar="PATH", help="text files or directories of *.txt (UTF-8)")
    group.add_argument("--tfds", metavar="NAME", help="a tensorflow-datasets text dataset, e.g. tiny_shakespeare")
    group.add_argument("--tfds-split", default="all", help="TFDS split; 'all' = train+validation+test in order")
    group.add_argument("--tfds-feature", default="text", help="the text feature of each TFDS example")
    group.add_argument("--tfds-data-dir", help="TFDS data_dir (default: TFDS' own, ~/tensorflow_datasets)")
    group.add_argument("--tfds-manual-dir", help="folder with the raw files, to prepare TFDS offline")


def _source(args: argparse.Namespace, encoding_errors: str = "strict", documents: bool = False):
    from keras_chargen.corpus import make_source

    return make_source(
        args.text,
        args.tfds,
        encoding_errors,
        documents,
        split=args.tfds_split,
        feature=args.tfds_feature,
        data_dir=args.tfds_data_dir,
        manual_dir=args.tfds_manual_dir,
    )


def unescape(text: str) -> str:
    r"""Backslash escapes typed on a shell (`\n`, `\t`, `\\`, `\u00e9`) → the characters; other text unchanged."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as err:
        raise argparse.ArgumentTypeError(f"invalid escape in {text!r}: {err.reason}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-chargen",
        description="Train character-level language models with Keras, generate text in-graph, export them.",
        epilog=f"TensorFlow's own start-up and C++ log lines are hidden; {VERBOSE_ENV}=1 shows them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model (rerun the same command to resume)",
        description="Train a model; rerunning the same command resumes where it stopped.",
        usage="keras-chargen train [--text PATH [PATH ...] | --tfds NAME] --out MODEL_DIR [options]",
        formatter_class=HelpFormatter,
    )
    _add_corpus_args(train)
    train.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory (created)")
    settings = train.add_argument_group("model and training settings (saved in MODEL_DIR/config.json)")
    for field in dataclasses.fields(ChargenConfig):
        kind = (
            {"action": argparse.BooleanOptionalAction}
            if isinstance(field.default, bool)
            else {"type": type(field.default), "choices": CHOICES.get(field.name)}
        )
        # absent unless typed (so --init-from can tell inherited settings from conflicting ones)
        default = "" if _no_default(field.default) else f" (default: {field.default})"
        settings.add_argument(
            flag_name(field.name),
            dest=field.name,
            default=argparse.SUPPRESS,
            help=f"{field.metadata['help']}{default}".replace("%", "%%"),
            **kind,
        )
    train.add_argument(
        "--restart-from-best",
        action="store_true",
        help="drop MODEL_DIR/backup (e.g. a damaged one) and restart from MODEL_DIR/model.keras, fresh optimizer",
    )
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress: 0, 1 bar, 2 lines")
    train.add_argument("--no-samples", action="store_true", help="do not print samples after each epoch")
    train.add_argument("--sample-length", type=int, default=300, help="characters in the final sample (0: none)")

    generate = commands.add_parser(
        "generate",
        help="generate text from a trained model",
        usage="keras-chargen generate MODEL_DIR [--prompt TEXT] [--length N] [--temperature T [T ...]] [--seed N] "
        "[options]",
        formatter_class=HelpFormatter,
    )
    generate.add_argument("model_dir", metavar="MODEL_DIR")
    generate.add_argument(
        "--prompt", default="", metavar="TEXT", help="text to continue (default: none, start at a line start)"
    )
    generate.add_argument(
        "--temperature",
        type=float,
        nargs="+",
        default=[0.8],
        metavar="T",
        help="sampling temperature >= 0, 0 is greedy; several values give one sample each",
    )
    generate.add_argument(
        "--length", type=int, default=500, metavar="N", help="tokens (characters or words) to generate (at most 100000)"
    )
    generate.add_argument(
        "--num-samples", type=int, default=1, metavar="N", help="independent samples (1 to 1000), one after another"
    )
    generate.add_argument(
        "--novel",
        action="store_true",
        help="document models: print only documents that are not in the training text",
    )
    generate.add_argument(
        "--oov",
        choices=("error", "skip", "unk"),
        default="error",
        help="prompt tokens not in the vocabulary: error (name them), skip them (characters) "
        "or feed them as [UNK] (words)",
    )
    add_sampling_flags(generate)

    evaluate = commands.add_parser(
        "evaluate",
        help="loss, bits/char and perplexity on a text",
        usage="keras-chargen evaluate MODEL_DIR [--text PATH [PATH ...] | --tfds NAME] [options]",
        formatter_class=HelpFormatter,
    )
    evaluate.add_argument("model_dir", metavar="MODEL_DIR")
    _add_corpus_args(evaluate)
    evaluate.add_argument(
        "--split",
        choices=("val", "all"),
        default="val",
        help="val: the last val_fraction of the text (as in training); all: the whole text",
    )
    evaluate.add_argument("--encoding-errors", choices=ENCODING_ERRORS, default="strict")
    evaluate.add_argument(
        "--ngram-order",
        type=int,
        default=0,
        metavar="K",
        help="also score a character n-gram baseline of this order (trained on the rest); 0 = none",
    )

    add_export_parser(commands)
    add_serve_parser(commands)
    add_bench_parser(commands)
    add_inspect_parser(commands)
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    # settings, sources and the lock are checked before TensorFlow loads (seconds)
    fields = [f.name for f in dataclasses.fields(ChargenConfig)]
    given = {name: getattr(args, name) for name in fields if hasattr(args, name)}
    try:
        if given.get("init_from"):  # the architecture comes from that model; typed flags must agree with it
            from keras_chargen.finetune import inherit_config

            config = inherit_config(given["init_from"], given)  # (its own errors name --init-from)
        else:
            config = ChargenConfig(**given)
    except ChargenError as err:
        if str(err).split(" ", 1)[0].rstrip(":") not in fields:
            raise
        raise named_by_flag(err, fields) from None
    source = _source(args, config.encoding_errors, config.documents)
    if config.strategy != "multiworker":  # (a worker's lock is the chief's, on shared storage)
        from keras_chargen.lock import DirectoryLock

        DirectoryLock(args.out).check()  # a second `train` into a running directory answers at once
    announce_embedded(source, "training")
    from keras_chargen.saving import load_generator
    from keras_chargen.training import train

    result = train(
        config,
        source,
        args.out,
        verbose=args.verbose,
        sample_every_epoch=not args.no_samples,
        restart_from_best=args.restart_from_best,
    )
    print(f"model in {result.model_dir}")
    if args.sample_length > 0:
        text = load_generator(args.out).generate([""], 0.8, args.sample_length, seed=config.seed)[0]
        print(f"--- sample (temperature 0.8) ---\n{text}")


def announce_embedded(source, doing: str) -> None:
    """Say so (first) when the corpus is the embedded default, not one the user named."""
    from keras_chargen.corpora import EmbeddedSource

    if isinstance(source, EmbeddedSource):
        corpus = source.corpus
        print(
            f"{doing} on the embedded {corpus.name} corpus ({corpus.size_bytes:,} characters, {corpus.license}); "
            "--text FILE or --tfds NAME for another",
            flush=True,
        )


# Settings with a `generate` flag of their own: several temperatures (one sample each), the length.
OWN_FLAGS = ("temperature", "max_new_chars")


def flag_settings() -> list[str]:
    """The settings of `keras_chargen.settings` that `generate` takes as `--name` flags (absent = off)."""
    from keras_chargen.settings import SETTINGS

    return [s.name for s in SETTINGS if s.name not in OWN_FLAGS]


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per setting of `keras_chargen.settings` (absent = off), its help from the description."""
    from keras_chargen.settings import BY_NAME

    types: dict[str, Callable[[str], Any]] = {"int32": int, "float32": float, "string": unescape}
    metavars = {"int32": "N", "float32": "X", "string": "TEXT"}
    for name in flag_settings():
        spec = BY_NAME[name]
        extra = r"; escapes like \n work" if spec.dtype == "string" else ""
        parser.add_argument(
            generate_flag(name),
            dest=name,
            type=types[spec.dtype],
            default=None,
            metavar=metavars[spec.dtype],
            help=f"{spec.meaning}: {cli_rule(name)}{extra}",
        )


def generate_flag(name: str) -> str:
    """The `generate` flag of a sampling setting (`max_new_chars` is `--length`)."""
    return GENERATE_FLAGS.get(name, "--" + name.replace("_", "-"))


def cli_rule(name: str) -> str:
    """A setting's valid values as a CLI user types them: "(None = off)" becomes "omit --flag to turn it off"."""
    from keras_chargen.settings import BY_NAME

    spec = BY_NAME[name]
    rule = spec.api_rule or spec.rule
    match = re.fullmatch(r"(.*?)\s*\(None = (\w+)\)", rule)
    if match is None:
        return rule
    what = "for a random seed" if match[2] == "random" else "to turn it off"
    return f"{match[1]}; omit {generate_flag(name)} {what}"


def check_generate_flags(args: argparse.Namespace) -> None:
    """The sampling flags, checked by the settings' one description before TensorFlow loads (errors answer at once)."""
    from keras_chargen.settings import MAX_STOP_CHARS, check_api

    if args.num_samples < 1 or args.num_samples > 1000:
        raise UsageError(f"--num-samples must be an integer in 1..1000; got {args.num_samples}")
    values = [("temperature", t) for t in args.temperature] + [("max_new_chars", args.length)]
    values += [(name, getattr(args, name)) for name in flag_settings()]
    for name, value in values:
        try:
            check_api(name, value)
        except ChargenError:
            raise UsageError(f"{generate_flag(name)} must be {cli_rule(name)}; got {value!r}") from None
    if args.stop is not None and len(args.stop) > MAX_STOP_CHARS:
        raise UsageError(f"--stop has {len(args.stop)} characters; the maximum is {MAX_STOP_CHARS}")


def cmd_generate(args: argparse.Namespace) -> None:
    check_generate_flags(args)
    import random

    from keras_chargen.saving import load_generator
    from keras_chargen.settings import SEED_MAX

    generator = load_generator(args.model_dir)
    temps = args.temperature * args.num_samples  # every sample at every temperature
    if args.seed is None:  # drawn here, so that one number reproduces every sample (sample i uses seed + i)
        args.seed = random.SystemRandom().randint(0, SEED_MAX)
    settings = {name: getattr(args, name) for name in flag_settings() if name != "seed"}

    def draw(seed: int | None) -> list[str]:
        return generator.generate([args.prompt] * len(temps), temps, args.length, seed, args.oov, **settings)

    if args.novel and generator.document_end is None:
        raise ChargenError(f"--novel needs a document model (trained with --documents); {args.model_dir} is not one")
    if args.novel:
        from keras_chargen.documents import novel_documents

        texts = novel_documents(draw, args.model_dir, args.prompt, args.num_samples, len(temps), args.seed)
    else:
        texts = draw(args.seed)
    print(f"seed: {args.seed} (the same --seed gives the same text)", file=sys.stderr)
    if generator.document_end is not None:  # a document model: whole documents, one per line
        for text in texts:
            print(args.prompt + text)
        return
    for i, (temperature, text) in enumerate(zip(temps, texts)):
        if len(args.temperature) > 1:
            sample = i // len(args.temperature) + 1
            print(f"===== sample {sample} of {args.num_samples}, temperature {temperature:g} =====")
        elif args.num_samples > 1:
            print(f"===== sample {i + 1} of {args.num_samples} =====")
        print(args.prompt + text)


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.ngram_order < 0:
        raise UsageError(f"--ngram-order must be an integer >= 0 (0 = none); got {args.ngram_order}")
    from keras_chargen.evaluation import evaluate
    from keras_chargen.saving import CONFIG_FILE

    config = ChargenConfig.load(Path(args.model_dir) / CONFIG_FILE) if Path(args.model_dir).is_dir() else None
    unit = config.level if config else "char"
    source = _source(args, args.encoding_errors, bool(config and config.documents))  # documents as trained
    announce_embedded(source, "evaluating")
    if args.ngram_order:
        from keras_chargen.evaluation import ngram_baseline

        nats = ngram_baseline(args.model_dir, source, args.ngram_order)
        print(f"order-{args.ngram_order} n-gram baseline: {nats:.4f} nats/{unit}, {nats / math.log(2):.4f} bits/{unit}")
    result = evaluate(args.model_dir, source, args.split)
    print(f"{'words' if unit == 'word' else 'characters'}: {result['chars']}")
    print(f"loss: {result['loss']:.4f} nats/{unit}")
    print(f"perplexity: {result['perplexity']:.4f}")
    print(f"bits/{unit}: {result['bpc']:.4f}")


# --- export ---
def add_export_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="export SavedModel (TF Serving), TFLite and ONNX artifacts",
        usage=(
            "keras-chargen export MODEL_DIR --out OUT [--format savedmodel|tflite|onnx|web|all] [--version N] [options]"
        ),
        formatter_class=HelpFormatter,
    )
    export.add_argument("model_dir", metavar="MODEL_DIR")
    export.add_argument(
        "--format",
        choices=("savedmodel", "tflite", "onnx", "web", "all"),
        default="savedmodel",
        help="artifact format (web: a static page running the model in the browser; all: every format but web)",
    )
    export.add_argument(
        "--out",
        required=True,
        help=(
            "model base path, e.g. exported/NAME: the SavedModel goes to OUT/VERSION (TF Serving), TFLite to "
            "OUT/tflite[-dynamic|-float16]/VERSION, ONNX to OUT/onnx/VERSION, the web page to OUT/web/VERSION"
        ),
    )
    export.add_argument(
        "--version", type=int, default=1, metavar="N", help="TF Serving version number (a positive integer)"
    )
    export.add_argument(
        "--quantize", choices=("none", "dynamic", "float16"), default="none", help="TFLite weight quantization"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing version directory")


def cmd_export(args: argparse.Namespace) -> int:
    """Export; an interrupt exits 0 if every version directory was already in place, else 130."""
    from keras_chargen.export.layout import check_export_args

    try:
        check_export_args(args.format, args.version, args.quantize)
    except ChargenError as err:
        raise named_by_flag(err, ("format", "version", "quantize")) from None
    from keras_chargen.export import export_model

    placed: list[Path] = []
    try:
        paths = export_model(args.model_dir, args.out, args.format, args.version, args.quantize, args.overwrite, placed)
    except KeyboardInterrupt:
        return _interrupted_export(args, placed)
    for path in paths:
        print(f"exported {path}")
    return 0


def _interrupted_export(args: argparse.Namespace, placed: list[Path]) -> int:
    """Report what an interrupted export left on disk; its exit status: 0 if complete, 130 otherwise."""
    from keras_chargen.export import artifact_dir
    from keras_chargen.export.layout import check_export_args

    formats = check_export_args(args.format, args.version, args.quantize)
    targets = [artifact_dir(args.out, f, args.version, args.quantize) for f in formats]
    if not args.overwrite:  # they were free at the start: any that exists now is this export's, complete
        placed = [t for t in targets if t in placed or t.exists()]
    if len(placed) == len(targets):
        for path in targets:
            print(f"exported {path}")
        print("interrupted after the export was complete", file=sys.stderr)
        return 0
    missing = ", ".join(str(t) for t in targets if t not in placed)
    done = f"; exported {', '.join(str(p) for p in placed)}" if placed else ""
    print(f"interrupted: not exported {missing}{done}; rerun to export the rest", file=sys.stderr)
    return 130


# --- serve ---
def add_serve_parser(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve an exported model over TensorFlow Serving's REST and gRPC APIs",
        usage="keras-chargen serve EXPORTED_DIR [--port 8501] [--grpc-port 8500] [--host 127.0.0.1] [options]",
        formatter_class=HelpFormatter,
    )
    serve.add_argument("base_path", metavar="EXPORTED_DIR", help="model base path holding version directories")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    serve.add_argument("--port", type=port_number, default=8501, help="REST TCP port (0: any free port)")
    serve.add_argument(
        "--grpc-port", type=port_number, default=8500, help="gRPC TCP port (TF Serving's PredictionService); 0: off"
    )
    versions = serve.add_mutually_exclusive_group()
    versions.add_argument(
        "--version-policy",
        default="latest",
        help="versions to serve, as TF Serving's model_version_policy: latest, latest:N, all, specific:V1,V2",
    )
    versions.add_argument(
        "--all-versions",
        action="store_const",
        const="all",
        dest="version_policy",
        default=argparse.SUPPRESS,
        help="serve every version folder (--version-policy all)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (http://host:port, or *) whose pages may call the API, with CORS headers; repeatable",
    )
    serve.add_argument("--model-name", help="name in the URLs (default: the base path's folder name)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    from keras_chargen.serving.config import ServingConfig

    for field in dataclasses.fields(ServingConfig):
        if field.type in (bool, "bool"):  # --batching / --no-batching
            serve.add_argument(
                "--" + field.name.replace("_", "-"),
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=field.metadata["help"],
            )
        else:
            serve.add_argument(
                "--" + field.name.replace("_", "-"),
                type=type(field.default),
                default=field.default,
                help=field.metadata["help"],
            )


def port_number(text: str) -> int:
    """A TCP port typed on the command line: an integer in 0..65535 (argparse names the flag)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..65535; got {port}")
    return port


def cmd_serve(args: argparse.Namespace) -> None:
    from keras_chargen.serving.config import ServingConfig

    fields = [f.name for f in dataclasses.fields(ServingConfig)]
    try:
        config = ServingConfig(**{name: getattr(args, name) for name in fields})
    except ChargenError as err:
        raise named_by_flag(err, fields, lambda name: "--" + name.replace("_", "-")) from None
    from keras_chargen.serving import serve

    serve(
        args.base_path,
        host=args.host,
        port=args.port,
        model_name=args.model_name,
        config=config,
        log_level=args.log_level,
        grpc_port=args.grpc_port,
        policy=args.version_policy,
        allow_origins=tuple(args.allow_origin),
    )


def add_bench_parser(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure generation and training speed against reference approaches",
        usage="keras-chargen bench --text PATH [--model-dir MODEL_DIR] [--quick] [--out-dir DIR]",
        formatter_class=HelpFormatter,
    )
    bench.add_argument("--model-dir", help="a trained model (default: an untrained 2x512 LSTM; speed is the same)")
    bench.add_argument("--text", required=True, help="corpus for the prompt, vocabulary and training windows")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions (a few minutes on 2 cores)")
    bench.add_argument("--out-dir", default="docs", help="where BENCHMARKS.md, benchmarks.png/json go")


def cmd_bench(args: argparse.Namespace) -> None:
    import json

    from keras_chargen.bench import chars_per_second, run_benchmarks

    report = run_benchmarks(args.model_dir, args.text, quick=args.quick, out_dir=args.out_dir)
    print(json.dumps(chars_per_second(report)))


# --- inspect ---
def add_inspect_parser(commands) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="per-character probabilities, alternatives and cell activations of a text, as an HTML report",
        usage="keras-chargen inspect MODEL_DIR (--text FILE | --prompt TEXT [--generate N]) [--html OUT] [--json OUT]",
        formatter_class=HelpFormatter,
    )
    inspect.add_argument("model_dir", metavar="MODEL_DIR")
    given = inspect.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", nargs="+", metavar="FILE", help="text files (or directories of *.txt) to inspect")
    given.add_argument("--prompt", type=unescape, help=r"a text to inspect, typed (escapes like \n work)")
    inspect.add_argument(
        "--generate", type=int, default=0, metavar="N", help="with --prompt: generate N tokens after it, inspect both"
    )
    inspect.add_argument("--temperature", type=float, default=0.8, help="with --generate: the sampling temperature")
    inspect.add_argument(
        "--seed", type=int, default=None, help="with --generate: the seed (omit --seed for a random seed)"
    )
    inspect.add_argument("--html", metavar="OUT", help="write the self-contained HTML report here")
    inspect.add_argument("--json", metavar="OUT", help="write the JSON report here")
    inspect.add_argument(
        "--max-positions",
        type=int,
        default=2000,
        help="positions whose details (alternatives, activations) the reports hold; statistics cover all",
    )
    inspect.add_argument("--encoding-errors", choices=ENCODING_ERRORS, default="strict")


def cmd_inspect(args: argparse.Namespace) -> None:
    """Inspect a text; print the summary and the best cell per feature, write the reports asked for."""
    import random

    from keras_chargen.settings import SEED_MAX, check_api

    if args.generate and args.prompt is None:
        raise UsageError("--generate needs --prompt (the text to continue)")
    for flag, name, value in [
        ("--generate", "max_new_chars", args.generate),
        ("--temperature", "temperature", args.temperature),
        ("--seed", "seed", args.seed),
    ]:
        try:
            check_api(name, value)
        except ChargenError:
            raise UsageError(
                f"{flag} must be {cli_rule(name).replace(generate_flag(name), flag)}; got {value!r}"
            ) from None
    if args.max_positions < 0:
        raise UsageError(f"--max-positions must be an integer >= 0; got {args.max_positions}")
    text: Any
    if args.text:
        from keras_chargen.corpus import FileSource, resolve_text_paths

        text = FileSource(tuple(resolve_text_paths(args.text)), args.encoding_errors).chunks()
    else:
        text = args.prompt
    from keras_chargen.inspection import inspect_text
    from keras_chargen.saving import load_generator

    generator = load_generator(args.model_dir)
    if args.generate:
        if args.seed is None:
            args.seed = random.SystemRandom().randint(0, SEED_MAX)
        print(f"seed: {args.seed} (the same --seed gives the same text)", file=sys.stderr)
        lenient = generator.codec.oov_policies[-1]  # unknown prompt tokens: skipped (characters) or [UNK] (words)
        text += generator.generate(text, args.temperature, args.generate, args.seed, oov=lenient)[0]
    result = inspect_text(generator, text, args.max_positions)
    print_inspection(result)
    title = Path(args.text[0]).name if args.text else "prompt"
    if args.json:
        import json

        from keras_chargen.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    if args.html:
        from keras_chargen.inspect_report import render_html
        from keras_chargen.io import atomic_write_text

        atomic_write_text(args.html, render_html(result, f"{Path(args.model_dir).name} on {title}"))
        print(f"wrote {args.html}")


def print_inspection(result: Inspection) -> None:
    """The summary lines of `inspect`: bits per token, what the reports hold, the best cell per feature."""
    unit = result.level
    print(
        f"inspected {result.total:,} {unit}s: {result.bits_per_char:.4f} bits/{unit} "
        f"over the {result.scored:,} with a prediction (the first has none)"
    )
    if result.shown < result.total:
        print(f"details (alternatives, activations) for the first {result.shown:,} positions (--max-positions)")
    print("cells that follow a feature (Pearson r over all positions):")
    for match in result.cells:
        print(f"  {match.feature:<14} layer {match.layer} {match.kind}[{match.cell}]  r = {match.correlation:+.3f}")
    if result.constant_features:
        print(f"  not in this text: {', '.join(result.constant_features)}")


COMMANDS = {
    "train": cmd_train,
    "generate": cmd_generate,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "serve": cmd_serve,
    "bench": cmd_bench,
    "inspect": cmd_inspect,
}


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers by name."""
    return parser._subparsers._group_actions[0].choices  # type: ignore[union-attr,return-value]


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; an error prints one line and the usage of the subcommand meant, and exits with 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _commands(parser)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in commands and not {"-h", "--help"} & set(argv[: argv.index(first)]):
        close = difflib.get_close_matches(first, commands, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; choose from {', '.join(commands)}"
        parser.error(f"unknown command {first!r}{hint}")
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keras-chargen` console script; returns the exit status."""
    parser = build_parser()
    args = parse_args(parser, argv)
    quiet_tensorflow_start()  # commands import TensorFlow once their arguments are checked
    try:
        status = COMMANDS[args.command](args)
    except UsageError as err:  # a bad flag value: under the command's usage, like argparse's errors
        command = _commands(parser)[args.command]
        command.print_usage(sys.stderr)
        print(f"{command.prog}: error: {err}", file=sys.stderr)
        return 2
    except ChargenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or vanished folder … met where no ChargenError names it
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
