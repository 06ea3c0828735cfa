"""Image search and guideline lookup for the copilot, when their indexes hold something.

Both indexes are optional: a deployment without images or guidelines still gets a copilot
over the chart. An index that is missing, empty or cannot be opened is left out with a log
line, never an error at startup.
"""

from __future__ import annotations

import logging

from langchain_core.tools import BaseTool

from wardround.settings import Settings

log = logging.getLogger(__name__)


def guideline_tools(settings: Settings) -> list[BaseTool]:
    try:
        from wardround.tools.guidelines.index import GuidelineIndex
        from wardround.tools.guidelines.tools import make_guideline_tools

        index = GuidelineIndex(settings.chroma_url or settings.chroma_dir)
        if index.count() == 0:
            log.info(
                "guideline index in %s is empty: lookup_guideline left out", settings.chroma_dir
            )
            return []
        return make_guideline_tools(index)
    except Exception as exc:  # an optional extra must not stop the copilot
        log.warning("guideline lookup left out: %s: %s", type(exc).__name__, exc)
        return []


def image_tools(settings: Settings) -> list[BaseTool]:
    if not settings.chroma_url and not settings.chroma_dir.exists():
        log.info("no index directory %s: search_images left out", settings.chroma_dir)
        return []
    try:
        from wardround.tools.images.search import open_image_index
        from wardround.tools.images.tools import make_image_tools

        index = open_image_index(settings.chroma_url or settings.chroma_dir)
        if index.count() == 0:
            log.info("image index in %s is empty: search_images left out", settings.chroma_dir)
            return []
        return make_image_tools(index)
    except Exception as exc:  # an optional extra must not stop the copilot
        log.warning("image search left out: %s: %s", type(exc).__name__, exc)
        return []


def optional_tools(settings: Settings) -> list[BaseTool]:
    """`search_images` and `lookup_guideline`, each only if its index has entries."""
    return [*image_tools(settings), *guideline_tools(settings)]
