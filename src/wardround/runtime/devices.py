"""Where in-process models run: the device, the dtype, and how to load weights onto it.

A leaf like `settings` (it imports only torch and transformers lazily), shared by the
transformers chat backend and the image encoders so both honour one `device` setting:
"auto" takes CUDA, then Apple's MPS, then the CPU; a named device ("cpu", "cuda:1") is used
as given, e.g. to leave a GPU to a vLLM server on the same machine.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

log = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""


def resolve_device(requested: str | None = "auto") -> str:
    """The best device present for "auto"; any other name is checked and normalised."""
    import torch

    name = (requested or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailable(
            f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise DeviceUnavailable(
                f"device {requested!r} was asked for but torch sees {count} CUDA device(s); "
                "set WARDROUND_DEVICE=auto or cpu"
            )
    elif device.type == "mps" and not _mps_available():
        raise DeviceUnavailable(f"device {requested!r} was asked for but MPS is not available")
    return str(device)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def preferred_dtype(device: str) -> Any:
    """The dtype to run a model in on `device` (see `dtype_for`)."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda":
        with torch.cuda.device(torch.device(device)):
            return dtype_for(kind, torch.cuda.is_bf16_supported())
    return dtype_for(kind, kind == "mps" and _mps_bf16())


def dtype_for(kind: str, bf16_supported: bool) -> Any:
    """bfloat16 on accelerators that support it: float16's speed with float32's range.

    float16 only where bfloat16 is missing (CUDA before compute capability 8, e.g. T4, V100);
    float32 on the CPU, where half precision is slower, not faster.
    """
    import torch

    if kind == "cpu":
        return torch.float32
    return torch.bfloat16 if bf16_supported else torch.float16


def _mps_bf16() -> bool:
    import torch

    try:
        torch.zeros(1, dtype=torch.bfloat16, device="mps")
    except (RuntimeError, TypeError):
        return False
    return True


def accelerate_available() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def placement_kwargs(device: str, has_accelerate: bool | None = None) -> dict[str, Any]:
    """`from_pretrained` arguments that put the weights straight onto `device`.

    With `device_map` transformers materialises each tensor on the device as it reads the
    checkpoint, instead of building the whole model in host RAM first (54 GB for a 27B model
    in bfloat16) and copying it over. transformers needs accelerate for any `device_map`;
    without it the weights go through host RAM and the caller moves the model afterwards.
    """
    if has_accelerate is None:
        has_accelerate = accelerate_available()
    if not has_accelerate:
        return {}
    return {"device_map": {"": device}}


def host_ram_warning(device: str) -> str | None:
    """What to tell a user whose model will be staged in host RAM on its way to `device`."""
    if device == "cpu" or accelerate_available():
        return None
    return (
        f"loading onto {device} through host RAM: `pip install accelerate` to load the "
        "weights straight onto the device"
    )


def move_if_needed(model: Any, device: str) -> Any:
    """The model on `device`: a no-op (no copy) when `device_map` already placed it there."""
    return model.to(device)


def load_pretrained(auto: Any, model_id: str, device: str, dtype: Any, **kwargs: Any) -> Any:
    """`auto.from_pretrained(model_id, **kwargs)` in `dtype` on `device`, in eval mode; warns
    first when the weights will be staged in host RAM."""
    if warning := host_ram_warning(device):
        log.warning(warning)
    model = auto.from_pretrained(model_id, dtype=dtype, **kwargs, **placement_kwargs(device))
    return move_if_needed(model, device).eval()
