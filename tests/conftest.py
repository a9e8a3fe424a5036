"""Shared test setup: offline environment and tiny models built once per session.

Fixtures (session scope, built with `kohya_lite.models.tiny.build_tiny_model`):
- `tiny_sd1_dir`, `tiny_sd2_dir`, `tiny_sdxl_dir`: diffusers folders (sd2 is v-prediction, linear projections);
- `tiny_sd1_single_file`, `tiny_sd2_single_file`, `tiny_sdxl_single_file`: the same weights as one LDM/SGM
  `.safetensors`, stored inside the matching folder (so `load_model` uses that folder's configs).
Treat them as read-only; copy them to tmp_path before changing anything.
"""

import os
import sys
from pathlib import Path

# Never reach a model hub from tests: fail fast instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models are dominated by per-op overhead: one intra-op thread is as fast on an idle machine and many
# times faster on a busy one (thread oversubscription). Only this process; subprocesses keep their own.
torch.set_num_threads(1)

SINGLE_FILE_NAME = "tiny-{family}.safetensors"


def _build(tmp_path_factory, family: str) -> Path:
    from kohya_lite.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp(f"tiny-{family}")
    return build_tiny_model(family, out, single_file=SINGLE_FILE_NAME.format(family=family), seed=0)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder in which nobody, root included, can create a file: procfs on Linux (CI runs as root, so a chmod'ed
    folder would not do); elsewhere a folder without write permission."""
    if sys.platform.startswith("linux") and Path("/proc/self").is_dir():
        yield Path("/proc/self")
        return
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder
    folder.chmod(0o700)


@pytest.fixture(scope="session")
def tiny_sd1_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "sd1")


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "sd2")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "sdxl")


@pytest.fixture(scope="session")
def tiny_sd1_single_file(tiny_sd1_dir) -> Path:
    return tiny_sd1_dir / SINGLE_FILE_NAME.format(family="sd1")


@pytest.fixture(scope="session")
def tiny_sd2_single_file(tiny_sd2_dir) -> Path:
    return tiny_sd2_dir / SINGLE_FILE_NAME.format(family="sd2")


@pytest.fixture(scope="session")
def tiny_sdxl_single_file(tiny_sdxl_dir) -> Path:
    return tiny_sdxl_dir / SINGLE_FILE_NAME.format(family="sdxl")


# ---- GPU tests: skipped without CUDA, and the summary says so ------------------------------------------------------
_GPU_SKIPPED: list[str] = []


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
            _GPU_SKIPPED.append(item.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _GPU_SKIPPED:
        terminalreporter.write_line(f"{len(_GPU_SKIPPED)} GPU tests skipped: no CUDA device on this machine "
                                    "(run benchmarks/gpu_check.sh where there is one)")
