"""The engines predict runs the ensemble with: images (N, H, W, 3) float32, normalised ->
probabilities (N, members), every member on the same batch.

- CPU, fp32 (the default): the bundle's `ensemble.onnx` under OpenVINO in f32 (asked for
  explicitly: on a bf16-capable CPU OpenVINO's own default is bf16) on an AVX-512 CPU, under
  ONNX Runtime first on an AVX2-only one, else torch with channels_last. All three are exact
  (equal to torch fp32 within 1e-5).
- CPU, `--precision bf16`: OpenVINO in bf16 where the CPU has bfloat16 instructions (AMX or
  AVX512-BF16), else torch in bfloat16 where torch supports it, else a clear refusal.
- CUDA: torch with mixed precision and pinned memory.

An engine is anything with a `name` (for the summary line), the `batch_size` it runs best at
and `__call__`; `choose_engine` picks one from --backend, --device and --precision. The order
`--backend auto` tries (AUTO_ORDER) is what bench/bench_predict.py measured, fastest first; it
is decided from what is installed and the CPU's flags, never by timing at start-up.
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Protocol

import numpy as np

from reference_model.bundle import BundleError, Manifest, load_bundle, verify_files
from reference_model.cpus import CPU_TOPOLOGY, cpu_flags, cpu_has_native_bf16, cpu_topology_visible
from reference_model.errors import PredictError, printable

PRECISIONS = ("fp32", "bf16")
# --backend: `auto` takes the first engine of AUTO_ORDER that can run here; the others insist
# on one engine and exit 2 when it cannot run.
BACKENDS = ("auto", "openvino", "onnx", "torch")
# Fastest first, as bench/bench_predict.py measured (bench/README.md, "predict"). fp32: OpenVINO
# f32 beat ONNX Runtime on AVX-512 CPUs (with AMX, and with AVX512-BF16 without it); on an AVX2-only
# CPU nothing showed it ahead (capped at AVX2, OpenVINO ran level with ONNX Runtime), and ONNX
# Runtime is ready 0.7 s sooner, so it stays first there. bf16: OpenVINO (only where the CPU has
# bf16 instructions, see _unusable) ran 1.3x torch's bf16.
AUTO_ORDER = {
    ("fp32", "AVX-512"): ("openvino", "onnx", "torch"),
    ("fp32", "AVX2"): ("onnx", "openvino", "torch"),
    ("bf16", None): ("openvino", "torch"),  # whatever the CPU: _unusable passes OpenVINO over
}
PACKAGES = {"openvino": "openvino", "onnx": "onnxruntime"}  # --backend -> the module it imports


class Engine(Protocol):
    name: str  # what the summary line says ran, e.g. `openvino fp32`, `torch cpu bf16`
    batch_size: int  # images per batch unless --batch-size says otherwise

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float32 images -> (N, members) probabilities."""
        ...

    def start(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        """Start `batch`; the function returned waits for its probabilities. An engine that can
        run a batch while the caller prepares the next (OpenVINO) returns at once."""
        ...


class Synchronous:
    """`start` for an engine that runs a batch in the call itself (ONNX Runtime, torch)."""

    def start(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        outputs = self(batch)
        return lambda: outputs


def choose_engine(
    bundle_path: Path, manifest: Manifest, *, backend: str, device: str | None, precision: str, threads: int
) -> Engine:
    """The engine for --backend, --device and --precision, on `threads` CPU threads; a
    PredictError when the choice cannot be honoured, a BundleError when the bundle is broken."""
    for option, value, allowed in (("--backend", backend, BACKENDS), ("--precision", precision, PRECISIONS)):
        if value not in allowed:
            raise PredictError(f"{option} must be one of {', '.join(allowed)}, found {value!r}")
    if device not in (None, "cpu") or _cuda_available(device):
        if backend in PACKAGES:
            raise PredictError(f"--backend {backend} runs on CPU only; use --device cpu or --backend torch")
        return TorchEngine(bundle_path, manifest, device, precision)
    for name in auto_order(precision) if backend == "auto" else (backend,):
        if name == "torch":  # the last resort: it says itself why it cannot run (no bf16 here)
            return TorchEngine(bundle_path, manifest, device, precision)
        why_not = _unusable(name, manifest, precision)
        if why_not is None:
            return onnx_engine(name, bundle_path, manifest, precision, threads)
        if backend != "auto":
            raise PredictError(f"--backend {name} cannot be used: {why_not}")
    raise AssertionError("AUTO_ORDER ends with torch")


def onnx_engine(name: str, bundle_path: Path, manifest: Manifest, precision: str, threads: int) -> Engine:
    """The bundle's ensemble.onnx under OpenVINO or ONNX Runtime (`name`): the bundle's files
    checked first, the graph's shape checked against the manifest."""
    verify_files(bundle_path, manifest)
    path = bundle_path / manifest.onnx.file
    engine = OpenVinoEngine(path, precision, threads) if name == "openvino" else OnnxEngine(path, threads)
    check_graph(manifest, path, *engine.graph_shape())
    return engine


def auto_order(precision: str) -> tuple[str, ...]:
    """The engines `--backend auto` tries at `precision` on this CPU, fastest first: decided by
    its flags (a read of /proc/cpuinfo), not by timing at start-up."""
    if precision == "bf16":
        return AUTO_ORDER["bf16", None]
    return AUTO_ORDER["fp32", "AVX-512" if "avx512f" in cpu_flags() else "AVX2"]


def _unusable(backend: str, manifest: Manifest, precision: str) -> str | None:
    """Why OpenVINO or ONNX Runtime cannot run this bundle at this precision here, or None."""
    if manifest.onnx is None:
        return "the bundle has no ensemble.onnx (rebuild it with `mura bundle`)"
    if backend == "onnx" and precision != "fp32":
        return "ONNX Runtime runs fp32 only; use --backend openvino or torch for bf16"
    if backend == "openvino" and precision == "bf16" and not cpu_has_native_bf16():
        return (
            "OpenVINO runs bf16 only on a CPU with bfloat16 instructions (AMX or AVX512-BF16), and "
            "this one has neither; use --precision fp32"
        )
    if backend == "openvino" and not cpu_topology_visible():
        return (
            f"OpenVINO needs the CPU topology in {CPU_TOPOLOGY}, which this system hides (without it "
            "OpenVINO can crash); use --backend onnx (fp32) or torch"
        )
    package = PACKAGES[backend]
    try:
        module = importlib.import_module(package)
    except Exception as exc:  # not installed, or installed but broken (a missing library, ...)
        return f"{package} cannot be imported ({printable(str(exc))}); pip install {package}"
    if backend == "openvino" and precision == "bf16" and not _openvino_has_bf16(module):
        # The flags say bf16 but OpenVINO does not (OV_CPU_MAX_ISA caps it, say): asked for bf16
        # anyway, it would run f32 and be called bf16.
        return "OpenVINO reports no bf16 support on this CPU; use --precision fp32"
    return None


def _openvino_has_bf16(openvino: ModuleType) -> bool:
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def tune_malloc() -> None:
    """Keep freed memory in the process instead of returning it to the OS after every batch.

    glibc hands large blocks back with munmap/trim and the next batch faults them in again; on
    the evaluation VM this halved torch's throughput at batch 32 (bench/README.md). Equivalent
    to MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>; a no-op where there is no glibc. Torch
    only: ONNX Runtime keeps its own arena and was slower with it."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


class OnnxEngine(Synchronous):
    """The bundle's ensemble.onnx under ONNX Runtime on CPU: images -> (N, members)."""

    name = "onnxruntime fp32"
    # ONNX Runtime's arena keeps every activation of a batch for each member: a 2-member
    # DenseNet-169 peaked at 4.2 GB at batch 16 and 1.3 GB at batch 4, at the same speed
    # (bench/README.md), so small batches cost nothing and leave the container its memory.
    batch_size = 4

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are not the participant's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime's own types (InvalidProtobuf, Fail, ...): one message
            reason = printable(" ".join(str(exc).split()), 160)
            raise BundleError(
                f"{path} cannot be loaded by ONNX Runtime ({reason}); the file is damaged or not this "
                "kit's export; rebuild the bundle with `mura bundle`"
            ) from None

    def graph_shape(self) -> tuple[list, object]:
        """(the input's shape, the output's last dimension) as the graph declares them."""
        (images,), (probabilities,) = self.session.get_inputs(), self.session.get_outputs()
        return list(images.shape), probabilities.shape[-1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return self.session.run(None, {"images": images})[0]


def check_graph(manifest: Manifest, path: Path, input_shape: list, members: object) -> None:
    """The bundle's graph takes the manifest's input size and returns one column per member: a
    mismatch would fail on the first batch, or worse, give wrong columns."""
    size, expected = manifest.input_size, len(manifest.members)
    if input_shape[1:] != [3, size, size]:
        found = (
            f"{input_shape[2]}x{input_shape[3]} pixels"
            if len(input_shape) == 4
            else f"input of shape {input_shape}"
        )
        raise BundleError(
            f"{path} takes images of {found}, but manifest.json says input_size {size}; the "
            "manifest was edited or the ONNX file comes from another bundle; rebuild the bundle "
            "with `mura bundle`"
        )
    if members != expected:
        raise BundleError(
            f"{path} returns {members} probabilities per image, but manifest.json "
            f"lists {expected} members; rebuild the bundle with `mura bundle`"
        )


class OpenVinoEngine:
    """The bundle's ensemble.onnx under OpenVINO on CPU, in f32 (exact) or bf16: images ->
    (N, members).

    OpenVINO's CPU plugin runs `streams` inference requests side by side, each on its share of
    the threads (its THROUGHPUT mode); one request leaves cores idle in the layers that do not
    split well over threads. So each batch is cut into `streams` parts run at once, and `start`
    returns while they run: predict starts the next batch before it waits for this one, so that
    a stream that finishes first takes up the next part instead of idling until the other is
    done (4% more images/s than a wait after every batch, bench/README.md)."""

    def __init__(
        self, path: Path, precision: str, threads: int, streams: int = 2, per_stream: int = 4
    ) -> None:
        import openvino as ov
        from openvino.frontend import FrontEndManager

        try:
            # Its ONNX reader alone: Core.read_model tries every reader it has on a damaged file,
            # and TensorFlow's writes its complaints to stderr.
            onnx = FrontEndManager().load_by_framework("onnx")
            self.model = onnx.convert(onnx.load(str(path)))
        except Exception as exc:  # OpenVINO's own types (GeneralFailure, ...): its last line
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise BundleError(
                f"{path} cannot be loaded by OpenVINO ({printable(lines[-1], 160)}); the file is damaged "
                "or not this kit's export; rebuild the bundle with `mura bundle`"
            ) from None
        self.streams = max(1, min(streams, threads))
        config = {
            # Exactness is asked for: on a CPU with bf16, OpenVINO's default precision is bf16.
            "INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
            "PERFORMANCE_HINT": "THROUGHPUT",
            # Set, not derived by OpenVINO from the cores it sees: a container limited to 2 CPUs
            # on a 64-core host (docker --cpus) would get 64 threads and many streams.
            "NUM_STREAMS": self.streams,
            "INFERENCE_NUM_THREADS": threads,
        }
        self.compiled = ov.Core().compile_model(self.model, "CPU", config)
        self.idle: list = []  # inference requests not running: reused, made only when none is idle
        self.batch_size = self.streams * per_stream
        self.name = f"openvino {precision}"

    def graph_shape(self) -> tuple[list, object]:
        """(the input's shape, the output's last dimension) as the graph declares them."""
        (images,), (probabilities,) = self.model.inputs, self.model.outputs
        shape = [d.get_length() if d.is_static else None for d in images.get_partial_shape()]
        last = probabilities.get_partial_shape()[-1]
        return shape, last.get_length() if last.is_static else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.start(batch)()

    def start(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        running = []
        for part in np.array_split(images, self.streams):
            if len(part):
                request = self.idle.pop() if self.idle else self.compiled.create_infer_request()
                request.start_async({0: part})  # copies the part: the caller may reuse its array
                running.append(request)

        def wait() -> np.ndarray:
            outputs = []
            for request in running:
                request.wait()  # raises what the inference raised
                outputs.append(request.get_output_tensor(0).data.copy())  # the request reuses its tensor
            self.idle += running
            return np.concatenate(outputs)

        return wait


class TorchEngine(Synchronous):
    """The members in torch: channels_last, inference mode; CUDA with mixed precision and pinned
    memory; CPU in fp32 or bf16."""

    def __init__(self, bundle_path: Path, manifest: Manifest, device: str | None, precision: str) -> None:
        import torch

        from reference_model.model import EnsembleNet, ModelError, select_device

        self.torch = torch
        try:
            self.device = select_device(device)
        except ModelError as exc:
            raise PredictError(str(exc)) from None
        if self.device.type == "cpu":
            tune_malloc()
        bundle = load_bundle(bundle_path, manifest=manifest)
        net = EnsembleNet(bundle.models).eval().to(self.device, memory_format=torch.channels_last)
        self.dtype = torch.float32
        if precision == "bf16":
            if self.device.type == "cpu" and not cpu_has_bf16(torch):
                raise PredictError(
                    "--precision bf16 needs a CPU with bfloat16 support (AVX512-BF16 or AMX); "
                    "this one has none; use --precision fp32"
                )
            if self.device.type == "cpu":
                net = net.to(torch.bfloat16)
                self.dtype = torch.bfloat16
        self.net = net
        self.autocast = self.device.type == "cuda"
        self.batch_size = 64 if self.autocast else 16  # a GPU wants large batches; CPU bf16 peaks at 8-16
        self.name = f"torch {self.device.type} " + (
            "mixed precision" if self.autocast else ("bf16" if self.dtype == torch.bfloat16 else "fp32")
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from reference_model.model import autocast

        torch = self.torch
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW
        if self.device.type == "cuda":
            images = images.pin_memory().to(self.device, non_blocking=True)
        images = images.to(self.dtype)
        with torch.inference_mode(), autocast(self.device):
            return self.net(images).float().cpu().numpy()


def cpu_has_bf16(torch) -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cuda_available(device: str | None) -> bool:
    """Whether `device` (None: automatic) means CUDA. Asks torch only when it may have to."""
    if device == "cpu":
        return False
    if device is not None:
        return device.startswith("cuda")
    import importlib.util

    # No NVIDIA device node, no CUDA: spares the ONNX path torch's import (seconds).
    if not any(Path("/dev").glob("nvidia[0-9]*")) or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()
