"""GPU tests: every test here is marked `gpu`, and skipped, with the reason, where the core's
CUDA driver sees no GPU or PyTorch cannot use CUDA. One command runs them on a GPU machine:

    python -m pytest tests/gpu -m gpu -s
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def gpu_missing() -> str | None:
    """Why GPU tests cannot run here, or None when they can."""
    from pyserver import _core

    cuda_driver = getattr(_core, "cuda_driver", None)
    if cuda_driver is None:
        return "this build of pyserver._core has no GPU path (cuda_driver)"
    driver = cuda_driver()
    if not driver["available"]:
        return str(driver["error"])
    if not driver["devices"]:
        return "the CUDA driver sees no GPU"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install 'pyserver[pytorch]')"
    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} cannot use CUDA"
    return None


# tryfirst: the marker must be on the items before `-m gpu` selects among them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if not ours:
        return
    reason = gpu_missing()
    for item in ours:
        item.add_marker(pytest.mark.gpu)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
