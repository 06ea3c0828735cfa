"""`wardround doctor` on this CPU: every check that can run passes, the rest say why not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from wardround.cli import app
from wardround.doctor.checks import Report, measure_encoder, sample_images
from wardround.doctor.tiny_models import make_tiny_siglip
from wardround.tools.images.encoders import SiglipEncoder

NO_GPU = not torch.cuda.is_available()


def _lines(output: str) -> dict[str, str]:
    """Check name -> "status detail", from the report's indented lines."""
    out = {}
    for line in output.splitlines():
        if line.startswith("  "):
            status, rest = line.split(maxsplit=1)
            name, _, detail = rest.partition("  ")
            out[name.strip()] = f"{status} {detail.strip()}"
    return out


@pytest.mark.skipif(not NO_GPU, reason="asserts the CPU-only report")
def test_doctor_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDROUND_DEVICE", "auto")
    result = CliRunner().invoke(app, ["doctor", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "device: auto -> cpu" in result.output
    checks = _lines(result.output)
    assert checks["environment"].startswith("ok torch ")
    assert checks["siglip load"] == "ok tiny SigLIP on cpu, float32"
    assert checks["siglip embeddings"].startswith("ok 9 images and 2 texts -> 32-d, norms 1.0000")
    assert checks["gemma3 load"].startswith("ok tiny Gemma3ForConditionalGeneration on cpu")
    assert "4 image tokens marked for generate" in checks["gemma3 image chat"]
    for name in ("siglip vs cpu", "gemma3 vs cpu", "medsiglip-448 batch"):
        assert checks[name].startswith("skipped no GPU"), checks[name]
    assert "5 ok, 0 failed, 3 skipped" in result.output


@pytest.mark.skipif(not NO_GPU, reason="needs a machine without CUDA")
def test_doctor_on_a_missing_gpu_fails_in_one_line() -> None:
    result = CliRunner().invoke(app, ["doctor", "--device", "cuda"])
    assert result.exit_code == 1
    assert "fail     device  device 'cuda' was asked for but torch sees 0 CUDA device" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_a_failed_check_is_reported_not_raised() -> None:
    report = Report("cpu", "cpu")
    report.add("first", "ok", "fine")
    report.add("second", "fail", "AssertionError: cosine 0.5 <= 0.99")
    assert not report.ok
    assert report.lines()[-1] == "1 ok, 1 failed, 0 skipped"


def test_throughput_separates_preprocessing_from_embedding(tmp_path) -> None:
    path = make_tiny_siglip(tmp_path / "siglip", image_size=64, patch_size=16)
    encoder = SiglipEncoder(str(path), device="cpu", batch_size=3)
    row = measure_encoder(encoder, sample_images(7, size=80), repeats=1)
    assert (row.images, row.batch_size, row.device) == (7, 3, "cpu")
    assert all(t > 0 for t in (row.preprocess_s, row.embed_s, row.serial_s, row.overlapped_s))
    assert len(row.line().split()) >= 8
    assert np.isfinite(row.overlapped_s)
