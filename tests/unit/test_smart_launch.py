"""SMART App Launch of the copilot against a real OAuth2 authorization server (Authlib's code
grant with PKCE, served on loopback in front of the in-process FHIR server): the full
redirect flow with httpx, the session bound to the launched patient, others refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from eval_fixtures import EvalFhir
from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.copilot.checkpoint import open_checkpointer
from wardround.runtime.procs import free_port
from wardround.server.app import create_app
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.scripted_chat import ScriptedChatModel
from wardround.testing.smart_auth_server import SmartAuthServer

API = "http://copilot.test"
CLIENT_ID = "wardround-copilot"


@pytest.fixture(scope="module")
def auth(eval_fhir: EvalFhir) -> Iterator[SmartAuthServer]:
    port = free_port()
    server = SmartAuthServer(
        f"http://127.0.0.1:{port}",
        client_id=CLIENT_ID,
        redirect_uris=[f"{API}/smart/callback"],
        launches={"launch-ann": eval_fhir.ids["ann"]},
        standalone_patient=eval_fhir.ids["bob"],
        fhir_app=eval_fhir.app,
    )
    with LoopbackServer(server.app, port=port):
        yield server


@dataclass
class Copilot:
    app: object
    settings: Settings

    def browser(self) -> httpx.AsyncClient:
        """A client with its own cookie jar, as one browser is."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=API)


@pytest.fixture
async def copilot(
    auth: SmartAuthServer, eval_fhir: EvalFhir, tmp_path: Path
) -> AsyncIterator[Copilot]:
    settings = Settings(home=tmp_path, smart_app_client_id=CLIENT_ID, smart_app_issuers=[auth.iss])
    async with open_checkpointer(settings) as saver:
        app = create_app(
            settings,
            model=ScriptedChatModel(replies=[]),
            fhir=eval_fhir.client,
            checkpointer=saver,
            extra_tools=[],
            audit=AuditLog(tmp_path / "audit.jsonl"),
        )
        async with app.router.lifespan_context(app):
            yield Copilot(app, settings)


async def launch(browser: httpx.AsyncClient, **params: str) -> str:
    """launch -> authorize -> callback, as a browser follows them; returns the page URL."""
    started = await browser.get("/smart/launch", params=params)
    assert started.status_code == 302, started.text
    authorize = started.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert "launch/patient" in query["scope"][0] and "patient/*.read" in query["scope"][0]
    async with httpx.AsyncClient() as outside:  # the authorization server, over loopback
        granted = await outside.get(authorize)
    assert granted.status_code == 302, granted.text
    back = urlsplit(granted.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == API and "code=" in back.query
    done = await browser.get(f"{back.path}?{back.query}")
    assert done.status_code == 302, done.text
    return done.headers["location"]


async def test_ehr_launch_binds_the_session_to_the_launched_patient(
    copilot: Copilot, auth: SmartAuthServer, eval_fhir: EvalFhir
) -> None:
    ann, bob = eval_fhir.ids["ann"], eval_fhir.ids["bob"]
    async with copilot.browser() as browser:
        page = await launch(browser, iss=auth.iss, launch="launch-ann")
        assert page.startswith("/#thread=")
        thread = page.removeprefix("/#thread=")
        session = (await browser.get("/smart/session")).json()
        assert session["patient"] == ann and session["fhirUser"] == auth.user
        opened = await browser.get(f"/api/threads/{thread}")
        assert opened.status_code == 200 and opened.json()["patient_id"] == ann
        assert (await browser.get(f"/api/patients/{ann}/chart")).status_code == 200
        refused = await browser.get(f"/api/patients/{bob}/chart")
        assert refused.status_code == 403 and f"bound to Patient/{ann}" in refused.json()["detail"]
        other = await browser.post("/api/threads", json={"patient_id": bob})
        assert other.status_code == 403
        assert (await browser.get("/api/patients")).status_code == 403

        # Bob's thread, opened in another browser by a standalone launch, is refused here.
        async with copilot.browser() as second:
            bob_page = await launch(second)
            bob_thread = bob_page.removeprefix("/#thread=")
            assert (await second.get(f"/api/threads/{bob_thread}")).json()["patient_id"] == bob
        assert (await browser.get(f"/api/threads/{bob_thread}")).status_code == 403


async def test_without_a_session_and_with_bad_launches_the_api_refuses(
    copilot: Copilot, auth: SmartAuthServer, eval_fhir: EvalFhir
) -> None:
    async with copilot.browser() as browser:
        ann = eval_fhir.ids["ann"]
        assert (await browser.get(f"/api/patients/{ann}/chart")).status_code == 401
        untrusted = await browser.get(
            "/smart/launch", params={"iss": "https://evil.example/fhir", "launch": "x"}
        )
        assert (
            untrusted.status_code == 400
            and "not a FHIR server this copilot trusts" in untrusted.text
        )
        forged = await browser.get("/smart/callback", params={"state": "made-up", "code": "x"})
        assert forged.status_code == 400
        started = await browser.get(
            "/smart/launch", params={"iss": auth.iss, "launch": "launch-ann"}
        )
        state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
        wrong_code = await browser.get(
            "/smart/callback", params={"state": state, "code": "not-issued"}
        )
        assert wrong_code.status_code == 403 and "refused the code" in wrong_code.json()["detail"]
        assert (await browser.get("/api/health")).status_code == 200  # liveness stays open
