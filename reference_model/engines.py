"""The engines predict runs the ensemble with: images (N, H, W, 3) float32, normalised ->
probabilities (N, members), every member on the same batch.

- CPU, fp32 (the default): the bundle's `ensemble.onnx` under ONNX Runtime when both are there
  (exact: equal to torch within 1e-6, and faster on CPUs), else torch with channels_last.
- CPU, `--precision bf16`: torch in bfloat16, where the CPU supports it.
- CUDA: torch with mixed precision and pinned memory.

An engine is anything with a `name` (for the summary line), the `batch_size` it runs best at
and `__call__`; `choose_engine` picks one from --backend, --device and --precision.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Protocol

import numpy as np

from reference_model.bundle import BundleError, Manifest, load_bundle, verify_files
from reference_model.errors import PredictError

PRECISIONS = ("fp32", "bf16")
# --backend: `auto` runs ONNX Runtime where it can (fp32 on CPU, a bundle with ensemble.onnx,
# onnxruntime installed) and torch elsewhere; `onnx` insists on ONNX Runtime, `torch` on torch.
BACKENDS = ("auto", "onnx", "torch")


class Engine(Protocol):
    name: str  # what the summary line says ran, e.g. `onnxruntime fp32`, `torch cpu bf16`
    batch_size: int  # images per batch unless --batch-size says otherwise

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) float32 images -> (N, members) probabilities."""
        ...


def choose_engine(
    bundle_path: Path, manifest: Manifest, *, backend: str, device: str | None, precision: str, threads: int
) -> Engine:
    """The engine for --backend, --device and --precision, on `threads` CPU threads; a
    PredictError when the choice cannot be honoured, a BundleError when the bundle is broken."""
    for option, value, allowed in (("--backend", backend, BACKENDS), ("--precision", precision, PRECISIONS)):
        if value not in allowed:
            raise PredictError(f"{option} must be one of {', '.join(allowed)}, found {value!r}")
    if backend != "torch":
        why_not_onnx = _onnx_unusable(manifest, device, precision)
        if why_not_onnx is None:
            return OnnxEngine.from_bundle(bundle_path, manifest, threads)
        if backend == "onnx":
            raise PredictError(f"--backend onnx cannot be used: {why_not_onnx}")
    return TorchEngine(bundle_path, manifest, device, precision)


def _onnx_unusable(manifest: Manifest, device: str | None, precision: str) -> str | None:
    """Why ONNX Runtime cannot run this bundle here, or None when it can."""
    if manifest.onnx is None:
        return "the bundle has no ensemble.onnx (rebuild it with `mura bundle`)"
    if not _has_onnxruntime():
        return "onnxruntime is not installed (pip install onnxruntime)"
    if precision != "fp32" or device not in (None, "cpu") or _cuda_available(device):
        return "ONNX Runtime runs fp32 on CPU only"
    return None


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


class OnnxEngine:
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
            reason = " ".join(str(exc).split())[:160]
            raise BundleError(
                f"{path} cannot be loaded by ONNX Runtime ({reason}); the file is damaged or not this "
                "kit's export; rebuild the bundle with `mura bundle`"
            ) from None

    @classmethod
    def from_bundle(cls, bundle_path: Path, manifest: Manifest, threads: int) -> OnnxEngine:
        """The bundle's ONNX graph, its files checked first, its shape checked against the manifest."""
        verify_files(bundle_path, manifest)
        path = bundle_path / manifest.onnx.file
        engine = cls(path, threads)
        engine.check(manifest, path)
        return engine

    def check(self, manifest: Manifest, path: Path) -> None:
        """The graph takes the manifest's input size and returns one column per member: a
        mismatch would fail on the first batch, or worse, give wrong columns."""
        (images,), (probabilities,) = self.session.get_inputs(), self.session.get_outputs()
        size, members = manifest.input_size, len(manifest.members)
        shape = list(images.shape)
        if shape[1:] != [3, size, size]:
            found = f"{shape[2]}x{shape[3]} pixels" if len(shape) == 4 else f"input of shape {shape}"
            raise BundleError(
                f"{path} takes images of {found}, but manifest.json says input_size {size}; the "
                "manifest was edited or the ONNX file comes from another bundle; rebuild the bundle "
                "with `mura bundle`"
            )
        if probabilities.shape[-1] != members:
            raise BundleError(
                f"{path} returns {probabilities.shape[-1]} probabilities per image, but manifest.json "
                f"lists {members} members; rebuild the bundle with `mura bundle`"
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return self.session.run(None, {"images": images})[0]


class TorchEngine:
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


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


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
