"""The copilot page opened by a SMART EHR launch, in headless Chromium.

The EHR side is `testing/smart_auth_server.py` (Authlib's authorization code grant with
PKCE) served on loopback in front of SEKMET, so its `{base}/fhir` is a real FHIR base: the
`iss` of the launch and the FHIR server the API reads. The API (the copilot in SMART mode)
runs under uvicorn. Chromium opens `/smart/launch?iss=...&launch=...` as an EHR would, follows
the redirects through the authorization server (which signs the user in and consents, as an
EHR session would) back to the page, and the page shows the launched patient's chart with no
patient picker (it never asks for the list); the session it holds is bound to that patient:
the patient list and another patient's chart answer 403. No model call is made: the API's scripted model has no replies to give.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from browser_kit import WIDE, chromium, screenshot, serve
from wardround.runtime.procs import free_port
from wardround.server.app import create_app
from wardround.settings import Settings
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sample_charts import load_ann_and_bob
from wardround.testing.scripted_chat import ScriptedChatModel
from wardround.testing.sekmet_inprocess import asgi_client, sekmet_app
from wardround.testing.smart_auth_server import SmartAuthServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
SHOTS = "smart-browser"  # this test's folder of screenshots

CLIENT_ID = "wardround-copilot"
LAUNCH = "ehr-launch-ann-0001"  # the opaque launch id the EHR puts in the launch URL


@dataclass
class Ehr:
    auth: SmartAuthServer
    api: str
    ann: str
    bob: str
    model: ScriptedChatModel

    def fhir(self, path: str) -> dict[str, Any]:
        response = httpx.get(f"{self.auth.iss}/{path}", timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ehr]:
    """SEKMET with Ann and Bob behind the SMART authorization server, and the copilot API in
    SMART mode trusting that server's FHIR base as `iss`."""
    auth_port, api_port = free_port(), free_port()
    auth_base, api_url = f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{api_port}"
    fhir_app = sekmet_app(tmp_path_factory.mktemp("sekmet"), base_url=f"{auth_base}/fhir")

    async def load() -> dict[str, str]:
        async with asgi_client(fhir_app, base_url=f"{auth_base}/fhir") as client:
            return await load_ann_and_bob(client)

    ids = asyncio.run(load())
    auth = SmartAuthServer(
        auth_base,
        client_id=CLIENT_ID,
        redirect_uris=[f"{api_url}/smart/callback"],
        launches={LAUNCH: ids["ann"]},
        standalone_patient=ids["bob"],
        fhir_app=fhir_app,
    )
    settings = Settings(
        home=tmp_path_factory.mktemp("smart-home"),
        fhir_base_url=auth.iss,
        smart_app_client_id=CLIENT_ID,
        smart_app_issuers=[auth.iss],
    )
    model = ScriptedChatModel(replies=[])  # any model call would fail: none is expected
    app = create_app(settings, model=model, extra_tools=[])
    with LoopbackServer(auth.app, port=auth_port), serve(app, api_port) as url:
        yield Ehr(auth, url, ids["ann"], ids["bob"], model)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def test_ehr_launch_opens_the_page_on_the_launched_patient_only(ehr: Ehr, browser: Any) -> None:
    patient = ehr.fhir(f"Patient/{ehr.ann}")
    official = patient["name"][0]
    name = " ".join([*official["given"], official["family"]])
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(30_000)
    navigations: list[str] = []
    page.on("request", lambda r: navigations.append(r.url) if r.is_navigation_request() else None)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    listings: list[int] = []  # the statuses of the page's own requests for the patient list
    page.on(
        "response",
        lambda r: listings.append(r.status) if urlsplit(r.url).path == "/api/patients" else None,
    )

    # The EHR opens the app's launch URL with its FHIR base (iss) and an opaque launch id.
    launch = f"{ehr.api}/smart/launch?{urlencode({'iss': ehr.auth.iss, 'launch': LAUNCH})}"
    page.goto(launch)
    page.wait_for_function("location.hash.startsWith('#thread=')")
    # launch -> the authorization server's /authorize -> our callback -> the page.
    hops = [urlsplit(u) for u in navigations]
    assert [(origin(u), h.path) for u, h in zip(navigations, hops, strict=True)] == [
        (ehr.api, "/smart/launch"),
        (ehr.auth.base_url, "/authorize"),
        (ehr.api, "/smart/callback"),
        (ehr.api, "/"),
    ], navigations
    authorize = parse_qs(hops[1].query)
    assert authorize["launch"] == [LAUNCH] and authorize["aud"] == [ehr.auth.iss]
    assert authorize["code_challenge_method"] == ["S256"] and authorize["code_challenge"][0]

    # The page shows the launched patient, as the FHIR server names her.
    page.locator("#chart-body").wait_for(state="visible")
    assert page.locator(".patient-name").inner_text().strip() == name
    assert page.locator(".patient-name").get_attribute("data-ref") == f"Patient/{ehr.ann}"
    thread = page.evaluate("location.hash").split("=", 1)[1]
    screenshot(page, SHOTS, "smart-ehr-launch")

    # No patient list on the page: the launched session binds it, so it never asks for one.
    page.wait_for_timeout(500)
    assert listings == [], listings
    assert page.locator("#patient-select").is_hidden()
    assert page.locator("#patient-filter").is_hidden()
    assert page.locator("#picker").get_attribute("data-launched") == ehr.ann

    # The session (the page's own cookie) is bound to Ann: Bob and the list are refused.
    api = page.request
    session = api.get(f"{ehr.api}/smart/session").json()
    assert session["patient"] == ehr.ann and session["iss"] == ehr.auth.iss
    assert session["fhirUser"] == ehr.auth.user
    assert api.get(f"{ehr.api}/api/threads/{thread}").json()["patient_id"] == ehr.ann
    assert api.get(f"{ehr.api}/api/patients/{ehr.ann}/chart").status == 200
    listed = api.get(f"{ehr.api}/api/patients")
    assert listed.status == 403 and f"bound to Patient/{ehr.ann}" in listed.json()["detail"]
    other = api.get(f"{ehr.api}/api/patients/{ehr.bob}/chart")
    assert other.status == 403 and f"not Patient/{ehr.bob}" in other.json()["detail"]
    assert api.post(f"{ehr.api}/api/threads", data={"patient_id": ehr.bob}).status == 403
    # Without the cookie there is no session at all.
    assert httpx.get(f"{ehr.api}/api/patients/{ehr.ann}/chart", timeout=30).status_code == 401

    context.close()
    assert ehr.model.calls == [], "opening the page made no model call"
    outside = [u for u in requests if origin(u) not in (ehr.api, ehr.auth.base_url)]
    assert not outside, f"the page reached beyond the API and the EHR: {outside}"
