from __future__ import annotations

from collections.abc import Iterator

import pytest

from live import LiveStack, live_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One real stack per test session: SEKMET with PySynthea patients, the embedded model."""
    with live_stack(tmp_path_factory.mktemp("wardround-home")) as live:
        yield live
