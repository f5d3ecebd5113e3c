"""Model files are data, never paths: the checks every part runs before it trusts an ONNX file.

An ONNX file can point its tensors at *external data* (a path that ONNX Runtime reads
relative to the working directory): an uploaded model once answered with the bytes of
the cloud's ``./Makefile``. And a graph can be small on disk yet allocate gigabytes only
when it runs (``ConstantOfShape`` to a huge shape). So, in this order:

1. :func:`check_model_bytes`: static, cheap, in-process (parses with ``onnx``, never
   with ONNX Runtime). Refuses any tensor stored outside the file (initializers, sparse
   initializers, ``Constant`` and other tensor attributes), operators outside
   :data:`ALLOWED_OPS` (derived from what our backbone, heads, OODD, fine-tuned,
   anomaly (nearest-patch distance, upsampled map) and depth-fused graphs use), model-local functions, and tensors over the size limits.
   The cloud (upload), the worker (before it uploads), the edge model updater (after a
   download) and the inference service (before a load) all call it.
2. :func:`trial_run`: at upload only. Loads and runs the model once on a blank image in
   a child process under an address-space cap (``RLIMIT_AS``) and a time limit, in an
   empty working directory; a model that needs more, or hangs, is refused.

Both raise :class:`~intellioptics_common.errors.UnsafeModelError` (400) with a message
that says what to fix, and never echo bytes of the model back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intellioptics_common.errors import PackageError, UnsafeModelError

# Operators of the default ONNX domain that our own graphs use (backbone export,
# primary/OODD heads, fine-tuned export, hand-built test and bench graphs), plus a few
# element-wise and pooling operators a compatible exporter emits for the same layers.
# Control flow (If, Loop, Scan), custom domains and anything that reads or writes
# outside its tensors are not here on purpose.
ALLOWED_OPS = frozenset(
    {
        "Abs",
        "Add",
        "ArgMax",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "Div",
        "Exp",
        "Flatten",
        "Gather",
        "Gemm",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "MatMul",
        "Max",
        "MaxPool",
        "Min",
        "Mul",
        "Neg",
        "Pad",
        "Pow",
        "ReduceL2",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Resize",
        "Shape",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Tanh",
        "Transpose",
        "Unsqueeze",
    }
)
_DEFAULT_DOMAINS = ("", "ai.onnx")
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL, without importing onnx at module import


@dataclass(frozen=True)
class ModelLimits:
    """What a model file may hold and use. The defaults fit EfficientNet-Lite0 graphs
    (13 MB, largest tensor 1.6 MB) with a wide margin."""

    max_tensor_bytes: int = 128 * 1024 * 1024
    max_total_tensor_bytes: int = 512 * 1024 * 1024
    # The trial run's address-space cap: a base for Python + ONNX Runtime (about 250 MiB
    # of address space here for the backbone) plus room for the model's own arenas.
    trial_base_bytes: int = 1024 * 1024 * 1024
    trial_bytes_per_model_byte: int = 3
    trial_timeout_s: float = 30.0

    def trial_cap(self, model_size: int) -> int:
        return self.trial_base_bytes + self.trial_bytes_per_model_byte * model_size


@dataclass(frozen=True)
class ModelSummary:
    ops: frozenset[str]
    tensor_bytes: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def check_model_bytes(data: bytes, what: str = "model", limits: ModelLimits | None = None) -> ModelSummary:
    """Static checks of an ONNX file; raises :class:`UnsafeModelError` or ``PackageError``
    (not parseable ONNX). Needs the ``onnx`` package, imported here so that parts which
    never check models do not pay for it."""
    import onnx
    from google.protobuf.message import DecodeError

    limits = limits or ModelLimits()
    if not data:
        raise PackageError(f"The {what} model file is empty.")
    try:
        # load_from_string never follows external data references (only onnx.load of a path does).
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise PackageError(f"The {what} model file is not an ONNX model.", log_message=repr(exc)) from None
    if len(model.functions):
        raise UnsafeModelError(f"The {what} model defines local functions; export it with plain operators only.")
    graph = model.graph
    tensors = [*graph.initializer, *(s.values for s in graph.sparse_initializer)]
    tensors += [*(s.indices for s in graph.sparse_initializer)]
    ops = set()
    for node in graph.node:
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in ALLOWED_OPS:
            name = f"{node.domain}.{node.op_type}" if node.domain not in _DEFAULT_DOMAINS else node.op_type
            raise UnsafeModelError(
                f"The {what} model uses the operator {name!r}, which is not allowed here. "
                f"Allowed operators: {', '.join(sorted(ALLOWED_OPS))}."
            )
        ops.add(node.op_type)
        for attribute in node.attribute:
            if attribute.g.ByteSize() or len(attribute.graphs):
                raise UnsafeModelError(f"The {what} model has a subgraph in operator {node.op_type!r}; remove it.")
            tensors.extend([attribute.t] if attribute.HasField("t") else [])
            tensors.extend(attribute.tensors)
            tensors.extend([attribute.sparse_tensor.values] if attribute.HasField("sparse_tensor") else [])
    total = 0
    for tensor in tensors:
        if tensor.data_location == _EXTERNAL or len(tensor.external_data):
            raise UnsafeModelError(
                f"The {what} model stores tensor {tensor.name!r} as external data (a file path); "
                "models must carry all their data inside the file. Save it with save_as_external_data=False."
            )
        size = _declared_bytes(tensor)
        if size > limits.max_tensor_bytes:
            raise UnsafeModelError(
                f"The {what} model's tensor {tensor.name!r} is {size} bytes, over the {limits.max_tensor_bytes} limit."
            )
        total += size
    if total > limits.max_total_tensor_bytes:
        raise UnsafeModelError(
            f"The {what} model's tensors hold {total} bytes, over the {limits.max_total_tensor_bytes} limit."
        )
    return ModelSummary(
        ops=frozenset(ops),
        tensor_bytes=total,
        inputs=tuple(i.name for i in graph.input),
        outputs=tuple(o.name for o in graph.output),
    )


def _declared_bytes(tensor: Any) -> int:
    """Size the tensor claims by its dims (what ONNX Runtime would allocate), not its payload."""
    count = 1
    for dim in tensor.dims:
        count *= max(int(dim), 0)
    item = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}.get(tensor.data_type, 8)
    return max(count * item, len(tensor.raw_data))


def trial_run(data: bytes, what: str = "model", *, height: int, width: int, limits: ModelLimits | None = None) -> None:
    """Load and run the model once on zeros in a child process with a memory cap and a
    time limit; raises :class:`UnsafeModelError` when it needs more, or
    ``PackageError`` when ONNX Runtime cannot load or run it at all."""
    limits = limits or ModelLimits()
    cap = limits.trial_cap(len(data))
    with tempfile.TemporaryDirectory(prefix="model-trial-") as workdir:
        path = Path(workdir) / "model.onnx"
        path.write_bytes(data)
        # The child starts in an empty directory: a path that slipped past the static
        # checks would find nothing to read.
        try:
            completed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "intellioptics_common.model_check",
                    str(path),
                    str(height),
                    str(width),
                    str(cap),
                ],
                cwd=workdir,
                capture_output=True,
                timeout=limits.trial_timeout_s,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UnsafeModelError(
                f"The {what} model did not finish one run on a blank {width}x{height} image within "
                f"{limits.trial_timeout_s:g} s; it was refused."
            ) from None
    report = _last_json_line(completed.stdout)
    if completed.returncode == 0 and report.get("ok"):
        return
    error = str(report.get("error", ""))
    if report.get("stage") == "load" and not report.get("out_of_memory"):
        raise PackageError(f"The {what} model file is not a loadable ONNX model.", log_message=error)
    raise UnsafeModelError(
        f"The {what} model failed one run on a blank {width}x{height} image within a {cap // (1024 * 1024)} MiB "
        "memory limit; it was refused. Models must run in bounded memory.",
        log_message=f"trial run exit {completed.returncode}: {error or completed.stderr[-500:]!r}",
    )


def _last_json_line(output: bytes) -> dict[str, Any]:
    for line in reversed(output.decode(errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _trial_main(argv: list[str]) -> int:
    """Child side of :func:`trial_run`: caps its own address space first (no ``preexec_fn``:
    the parent has threads), then prints one JSON line; exit 0 when the run worked."""
    import resource

    path, height, width, cap = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import numpy as np

    from intellioptics_common.runtime import RuntimeOptions

    stage = "load"
    try:
        # One thread: the trial measures the model's own memory, not a thread pool's.
        session = RuntimeOptions(intra_op_threads=1, inter_op_threads=1).session(Path(path).read_bytes(), "trial")
        stage = "run"
        feeds = {}
        for spec in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
            if len(shape) == 4 and not all(isinstance(d, int) for d in spec.shape[2:]):
                shape[2:] = [height, width]
            feeds[spec.name] = np.zeros(shape, dtype=np.float32)
        session.run(None, feeds)
    except MemoryError:
        _report({"ok": False, "stage": stage, "out_of_memory": True, "error": "MemoryError"})
        return 3
    except Exception as exc:  # ONNX Runtime raises its own untyped exceptions
        text = repr(exc)
        # Constant folding at load can already hit the cap: ONNX Runtime says "Failed to allocate".
        out_of_memory = "alloc" in text.lower() or "bad_alloc" in text
        _report({"ok": False, "stage": stage, "out_of_memory": out_of_memory, "error": text[:500]})
        return 2
    _report({"ok": True})
    return 0


def _report(outcome: dict[str, object]) -> None:
    """The trial child's one line to its parent, on stdout (read by ``_last_json_line``)."""
    print(json.dumps(outcome), flush=True)  # noqa: T201


if __name__ == "__main__":
    sys.exit(_trial_main(sys.argv[1:]))
