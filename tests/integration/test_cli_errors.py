"""Bad input to the CLI: each case ends with one `error:` line and a non-zero exit, never a
traceback. Real SEKMET (a process) with charts, the stand-in model server, a server that
answers HTML, a corrupt index folder, a file that is not DICOM. The commands run in process
(typer's runner) so the table stays fast; `docs/safety.md` has the same table run as
subprocesses."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from typer.testing import CliRunner

from bench import drills
from wardround.cli import app, main
from wardround.testing.loopback import LoopbackServer

pytestmark = pytest.mark.integration


@dataclass
class World:
    stack: drills.Stack
    patient: str
    other_record: str  # an Observation id of another patient
    html_url: str
    corrupt_home: Path
    not_dicom: Path

    def env(self, **extra: str) -> dict[str, str]:
        model = {"WARDROUND_MODEL_NAME": "sim"}
        model["WARDROUND_MODEL_BASE_URL"] = f"{self.stack.url('model-sim')}/v1"
        return {**self.stack.env(), **model, **extra}


async def html(_: object) -> HTMLResponse:
    return HTMLResponse("<html><body><h1>It works!</h1></body></html>")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    stack = drills.new_stack("cli-errors")
    page = Starlette(routes=[Route("/{path:path}", html, methods=["GET", "POST"])])
    try:
        stack.fhir_up()
        patients = stack.load_charts()
        drills.restart(stack, "model-sim")
        found = httpx.get(f"{stack.fhir_url}/Observation", params={"patient": patients[1]})
        corrupt = tmp_path_factory.mktemp("corrupt-homes")
        for kind in ("guidelines", "images"):  # Chroma caches a failed open per folder
            (corrupt / kind / "chroma").mkdir(parents=True)
            (corrupt / kind / "chroma" / "chroma.sqlite3").write_bytes(b"not a database " * 99)
        not_dicom = tmp_path_factory.mktemp("files") / "scan.dcm"
        not_dicom.write_text("this is not a DICOM file\n")
        with LoopbackServer(page) as server:
            yield World(stack, patients[0], found.json()["entry"][0]["resource"]["id"],
                        server.url, corrupt, not_dicom)  # fmt: skip
    finally:
        stack.down()


def ask(world: World, question: str, patient: str | None = None) -> list[str]:
    return ["ask", question, "--patient", patient or world.patient]


CASES = {
    # name: (argv of the world, extra environment, words the error must hold)
    "unknown patient id": (lambda w: ask(w, "latest a1c", "no-such-patient"), {}, "unknown patient"),
    "malformed patient id": (lambda w: ask(w, "latest a1c", "../Patient?x=1"), {}, "not a FHIR"),
    "another patient's record id": (lambda w: ask(w, "latest a1c", w.other_record), {}, "unknown patient"),
    "empty question": (lambda w: ask(w, ""), {}, "empty"),
    "huge question (100 kB)": (lambda w: ask(w, "a1c " * 25_000), {}, "characters"),
    "FHIR URL answering HTML": (lambda w: ask(w, "latest a1c"), {"WARDROUND_FHIR_BASE_URL": "{html}/fhir"}, "not a JSON object"),
    "FHIR server down": (lambda w: ask(w, "latest a1c"), {"WARDROUND_FHIR_BASE_URL": "http://127.0.0.1:9/fhir"}, "unreachable"),
    "model server down": (lambda w: ask(w, "latest a1c"), {"WARDROUND_MODEL_BASE_URL": "http://127.0.0.1:9/v1"}, "model server"),
    "guidelines: no index": (lambda w: ["guidelines", "search", "statin"], {}, "no guideline index"),
    "images: no index": (lambda w: ["images", "search", "--text", "chest"], {}, "no image index"),
    "guidelines: corrupt index": (lambda w: ["guidelines", "search", "statin"], {"WARDROUND_HOME": "{corrupt}/guidelines"}, "not a database"),
    "images: corrupt index": (lambda w: ["images", "search", "--text", "chest"], {"WARDROUND_HOME": "{corrupt}/images"}, "not a database"),
    "images: a file that is not DICOM": (lambda w: ["images", "search", "--image", str(w.not_dicom)], {}, "not DICOM"),
    "eval: unknown task": (lambda w: ["eval", "run", "nosuch", "--model", "sim"], {}, "unknown task"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_nonzero(world: World, case: str) -> None:
    argv, extra, words = CASES[case]
    fill = {"html": world.html_url, "corrupt": str(world.corrupt_home)}
    env = world.env(**{k: v.format(**fill) for k, v in extra.items()})
    result = CliRunner().invoke(app, argv(world), env=env)
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert words in lines[0], lines[0]


def test_a_model_url_answering_html_is_a_clear_error(world: World) -> None:
    env = world.env(WARDROUND_MODEL_BASE_URL=f"{world.html_url}/v1")
    result = CliRunner().invoke(app, ask(world, "latest a1c"), env=env)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.strip().startswith("error:")
    assert "OpenAI chat completion" in result.stderr and "Traceback" not in result.stderr


def test_arguments_that_are_not_utf8_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    question = b"latest \xff\xfe a1c".decode("utf-8", "surrogateescape")  # as argv arrives
    monkeypatch.setattr(sys, "argv", ["wardround", "ask", question, "--patient", "p1"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: argument 2 is not UTF-8 text") and "\\xff" in err
