"""The embedded default: a GGUF model from a PyPI wheel, served by llama-cpp-python on loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from wardround.agents.gguf import gguf_path
from wardround.agents.presets import ModelPreset
from wardround.runtime.procs import ServiceRecord, free_port, running, start_service
from wardround.settings import Settings

SERVICE = "model"


def physical_cores() -> int:
    """Physical cores (hyper-threads share one core's arithmetic units, so llama.cpp gains
    nothing from them); the logical count where /proc/cpuinfo says nothing."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    cores = set()
    physical = core = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "physical id":
            physical = value.strip()
        elif key.strip() == "core id":
            core = value.strip()
            cores.add((physical, core))
    return len(cores) or os.cpu_count() or 1


def server_argv(
    preset: ModelPreset, model_file: Path, port: int, n_ctx: int, threads: int | None = None,
    cache_mib: int = 0,
) -> list[str]:  # fmt: skip
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_file),
        "--model_alias", preset.name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(threads or physical_cores()),
    ]  # fmt: skip
    if preset.chat_format:
        argv += ["--chat_format", preset.chat_format]
    if cache_mib > 0:  # llama-cpp-python's RAM cache of prompt states, longest prefix reused
        argv += ["--cache", "true", "--cache_size", str(cache_mib * 2**20)]
    return argv


def running_server(preset: ModelPreset, settings: Settings) -> ServiceRecord | None:
    """The embedded server for this preset if one is up (nothing is started)."""
    current = running(settings.run_dir, SERVICE, "/models")
    return current if current is not None and current.info.get("preset") == preset.name else None


def ensure_model_server(settings: Settings) -> ServiceRecord | None:
    """Start the embedded model server `settings` name, unless it is up or not needed (a
    non-embedded model, or the user's own URL). Entry points call this before they build a
    model: joining the GGUF file and starting llama.cpp happen here, not in a factory."""
    from wardround.agents.models import ModelSpec

    spec = ModelSpec(settings)
    if spec.backend != "embedded" or spec.explicit or settings.model_base_url:
        return None
    assert spec.preset is not None
    return ensure_server(spec.preset, settings)


def ensure_server(preset: ModelPreset, settings: Settings) -> ServiceRecord:
    """Reuse the running embedded server for this preset, or start one. Raises ServiceError."""
    current = running(settings.run_dir, SERVICE, "/models")
    wanted: dict[str, str | int] = {
        "preset": preset.name,
        "prompt_cache_mib": settings.model_prompt_cache_mib,
    }
    if current is not None and all(current.info.get(k) == v for k, v in wanted.items()):
        return current
    if current is not None:  # another preset (or cache) is up; one embedded model at a time
        from wardround.runtime.procs import stop_service

        stop_service(settings.run_dir, SERVICE)
    model_file = gguf_path(preset, settings.cache_dir)
    port = settings.model_port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    return start_service(
        SERVICE,
        server_argv(
            preset,
            model_file,
            port,
            settings.model_ctx,
            settings.model_threads,
            settings.model_prompt_cache_mib,
        ),
        run_dir=settings.run_dir,
        base_url=base_url,
        ready_url=f"{base_url}/models",
        log=settings.home / "logs" / "model.log",
        timeout_s=120,
        info={**wanted, "port": port},
    )
