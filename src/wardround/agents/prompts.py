"""Prompt files shipped with the package, read once."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def prompt(name: str) -> str:
    return files("wardround.agents").joinpath("prompts", f"{name}.md").read_text()
