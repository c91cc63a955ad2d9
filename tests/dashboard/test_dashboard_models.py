"""The models page in headless Chromium: a model trained through the API, its adapter and a checkpoint's GGUF
fetched with the API key and saved as downloads, and a failed export's error shown in its row."""

from __future__ import annotations

import re
import sqlite3
import tarfile
import time
from pathlib import Path
from typing import Any

import gguf
import pytest
from playwright.sync_api import Locator, Page, expect

from diablo_core.methods.diablo.adapter_io import CONFIG_FILE, WEIGHTS_FILE
from tests.dashboard.conftest import TINY_MODEL, Service
from tests.dashboard.test_dashboard_browser import JOB_TIMEOUT_S, api_client, sign_in
from tests.worker.conftest import chat_example, jsonl

pytestmark = [pytest.mark.slow, pytest.mark.integration]
# 48 examples, batch size 2, 2 epochs: 48 steps, a checkpoint at step 25 among others.
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 2, "num_blocks": 4}
# Every change of a row's export state, recorded as [model, state it left]: the page's steps, in order.
RECORD_STATES = """() => {
  window.exportStates = [];
  new MutationObserver((records) => {
    for (const r of records) window.exportStates.push([r.target.closest("tr").dataset.model, r.oldValue]);
  }).observe(document.getElementById("models-table"),
    { subtree: true, attributeFilter: ["data-state"], attributeOldValue: true });
}"""


def train_model(service: Service) -> dict[str, Any]:
    """A job trained through the API to the end; returns the finished job."""
    with api_client(service) as client:
        files = {"file": ("export.jsonl", jsonl([chat_example(i) for i in range(48)]), "application/jsonl")}
        training_file = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}).json()["id"]
        method = {"type": "diablo", "diablo": {"hyperparameters": HYPERPARAMETERS}}
        body = {"model": TINY_MODEL, "training_file": training_file, "method": method, "suffix": "export"}
        job = client.post("/v1/fine_tuning/jobs", json=body).json()
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job still {job['status']}\n{service.output()}"
            time.sleep(0.5)
            job = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", service.output()
    return job


def stored_adapter(service: Service, model: str) -> tuple[Path, str]:
    """Where the registry keeps the adapter ``model``, and its sha256."""
    with sqlite3.connect(service.data_dir / "registry.db") as database:
        query = "SELECT storage_path, sha256 FROM adapters WHERE name = ?"
        path, sha256 = database.execute(query, (model,)).fetchone()
    return Path(path), sha256


def states_of(page: Page, row: Locator) -> list[str]:
    """The export states the row went through, the current one last, repeats removed."""
    model = row.get_attribute("data-model")
    left = [state for name, state in page.evaluate("window.exportStates") if name == model]
    states = [*left, row.locator(".export-status").get_attribute("data-state")]
    return [state for i, state in enumerate(states) if i == 0 or state != states[i - 1]]


def save(page: Page, row: Locator, export: str, into: Path) -> Path:
    """Click the row's ``export`` button and wait for the download; returns where it was saved."""
    with page.expect_download(timeout=120_000) as info:
        row.locator(f"button[data-format='{export}']").click()
    download = info.value
    path = into / download.suggested_filename
    download.save_as(path)
    expect(row.locator(".export-status")).to_have_attribute("data-state", "saved")
    return path


def test_models_page_downloads_exports_and_shows_failures(
    page: Page, service: Service, screenshots: Path, tmp_path: Path
) -> None:
    job = train_model(service)
    model = job["fine_tuned_model"]
    with api_client(service) as client:
        listed = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", params={"limit": 100}).json()
    names = [checkpoint["fine_tuned_model_checkpoint"] for checkpoint in listed["data"]]
    assert f"{model}:ckpt-step-25" in names, names
    sign_in(page, service, "#/models")
    expect(page.locator("nav a.active")).to_have_text("Models")
    row = page.locator(f"tr.model-row[data-model='{model}']")
    expect(row).to_contain_text(TINY_MODEL)
    checkpoints = page.locator("tr.model-row.checkpoint")
    expect(checkpoints).to_have_count(len(names))
    assert [checkpoints.nth(i).get_attribute("data-model") for i in range(len(names))] == names
    page.evaluate(RECORD_STATES)

    # The adapter: the tar the API builds, named after the model, with the registry's weights inside.
    adapter = save(page, row, "adapter", tmp_path)
    assert adapter.name == re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_.") + "-adapter.tar"
    storage, sha256 = stored_adapter(service, model)
    root = f"diablo-{sha256[:12]}"
    with tarfile.open(adapter) as tar:
        assert tar.getnames() == [root, f"{root}/{CONFIG_FILE}", f"{root}/{WEIGHTS_FILE}"]
        weights = tar.extractfile(f"{root}/{WEIGHTS_FILE}")
        assert weights is not None and weights.read() == (storage / WEIGHTS_FILE).read_bytes()
    assert states_of(page, row) == ["idle", "building", "downloading", "saved"]

    # A checkpoint's 8-bit GGUF: built on the server while the row says so, then saved.
    checkpoint = checkpoints.nth(names.index(f"{model}:ckpt-step-25"))
    path = save(page, checkpoint, "gguf-q8_0", tmp_path)
    assert path.name.endswith("ckpt-step-25-q8_0.gguf"), path.name
    assert gguf.GGUFReader(path).fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert states_of(page, checkpoint) == ["idle", "building", "downloading", "saved"]
    page.screenshot(path=screenshots / "models.png", full_page=True)

    # A failed export shows the API's error in its row: the model is deleted after the page listed it.
    with api_client(service) as client:
        assert client.delete(f"/v1/models/{model}").status_code == 200
    row.locator("button[data-format='merged']").click()
    status = row.locator(".export-status")
    expect(status).to_have_attribute("data-state", "failed")
    expect(status).to_contain_text(f"No model found with id '{model}'")
    expect(status.locator("code")).to_have_text("model_not_found")
    expect(row.locator("button[data-format='merged']")).to_be_enabled()
