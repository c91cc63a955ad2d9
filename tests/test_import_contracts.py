"""The dependency directions of docs/architecture.md hold: import-linter's contracts in pyproject.toml, and
at run time every registry module, `api.main` and upload validation import without torch or transformers."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import registry
from tests.fresh_imports import heavy_modules_loaded

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_linter_contracts_are_kept() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_registry_module_imports_without_torch() -> None:
    modules = [f"registry.{info.name}" for info in pkgutil.iter_modules(registry.__path__)]
    assert heavy_modules_loaded(modules) == []


def test_api_main_and_upload_validation_import_without_torch() -> None:
    imports = ["api.main", "diablo_core.data.datasets"]
    assert heavy_modules_loaded(imports, heavy=("torch", "transformers", "numba")) == []


def test_the_inference_engine_still_loads_torch_when_it_starts() -> None:
    """The guard above is not vacuous: the lazy path it leaves open does load torch."""
    assert "torch" in heavy_modules_loaded(["api.services.engine_start"])
