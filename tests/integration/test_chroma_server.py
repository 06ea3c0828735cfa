"""Image and guideline indexes in a Chroma server (`chroma run`, WARDROUND_CHROMA_URL): the
same indexing and the same searches give the same results as the embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wardround.testing.chroma_server import chroma_server
from wardround.tools.guidelines.index import GuidelineIndex, index_files
from wardround.tools.guidelines.ingest import corpus_dir, discover
from wardround.tools.images.corpus import builtin_images, builtin_metadata
from wardround.tools.images.ingest import ingest
from wardround.tools.images.search import open_image_index, search_images

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
FILES = 8  # guideline documents: enough passages to rank, few enough to embed quickly
QUERIES = [
    "maximum rate of IV potassium through a peripheral line",
    "HbA1c goal for older adults with multiple chronic illnesses",
    "when to start a statin for primary prevention",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with chroma_server(tmp_path_factory.mktemp("chroma-server")) as url:
        yield url


def test_guidelines_same_results_as_embedded(server: str, tmp_path: Path) -> None:
    files = discover([corpus_dir()])[:FILES]
    embedded, remote = GuidelineIndex(tmp_path / "chroma"), GuidelineIndex(server)
    for index in (embedded, remote):
        indexed, skipped = index_files(index, files)
        assert indexed and not skipped
    assert remote.count() == embedded.count() > 0
    for query in QUERIES:
        here = embedded.search(query, 5)
        there = remote.search(query, 5)
        assert [h.id for h in there] == [h.id for h in here], query
        assert [h.dense_rank for h in there] == [h.dense_rank for h in here], query


def test_images_same_results_as_embedded(server: str, tmp_path: Path) -> None:
    if len(builtin_images()) < 2:
        pytest.skip("no bundled images installed (pip install pydicom-data deid-data)")
    embedded = open_image_index(tmp_path / "chroma")
    remote = open_image_index(server)
    found = builtin_images()[:6]
    files = [path for _, path in found]
    metadata = {path: builtin_metadata(image) for image, path in found}
    for index in (embedded, remote):
        assert ingest(index, files, metadata=metadata).indexed
    assert remote.count() == embedded.count() > 0
    first = embedded.search_text("chest x-ray", 1)[0].id
    for kwargs in ({"text": "chest x-ray"}, {"text": "CT of the head"}, {"image_id": first}):
        here = search_images(embedded, k=5, **kwargs)
        there = search_images(remote, k=5, **kwargs)
        assert [h.id for h in there] == [h.id for h in here], kwargs
        assert [round(h.score, 4) for h in there] == [round(h.score, 4) for h in here], kwargs


def test_the_same_command_reads_the_server(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wardround guidelines search` with WARDROUND_CHROMA_URL reads the server's index."""
    from typer.testing import CliRunner

    from wardround.cli import app

    if GuidelineIndex(server).count() == 0:  # filled by the test above, or now
        index_files(GuidelineIndex(server), discover([corpus_dir()])[:FILES])
    expected = GuidelineIndex(server).search(QUERIES[0], 1)[0].ref
    monkeypatch.setenv("WARDROUND_HOME", str(tmp_path))
    monkeypatch.setenv("WARDROUND_CHROMA_URL", server)
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["guidelines", "search", QUERIES[0], "--k", "1"])
    assert done.exit_code == 0, done.output
    assert expected in done.output
    assert not (tmp_path / "chroma").exists()  # nothing went to the embedded store
