"""Example ImagingStudy records for the built-in images: only for a chart that records that
kind of study, saying plainly what the image is, valid R4, made once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from wardround.runtime.procs import free_port
from wardround.settings import Settings
from wardround.stack.indexes import EXAMPLE_SYSTEM, link_examples
from wardround.testing.loopback import LoopbackServer
from wardround.testing.sekmet_inprocess import sekmet_app

CHEST_XRAY = "399208008"


def post(http: httpx.Client, resource: dict[str, Any]) -> str:
    response = http.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_only_a_chart_with_a_chest_x_ray_gets_the_example_image(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    app = sekmet_app(tmp_path / "fhir", base_url=base)  # strict validation of what we post
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    with LoopbackServer(app, port), httpx.Client(base_url=base + "/", headers=headers) as http:
        with_xray = post(http, {"resourceType": "Patient", "name": [{"family": "Ray"}]})
        without = post(http, {"resourceType": "Patient", "name": [{"family": "None"}]})
        procedure = {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": CHEST_XRAY,
                                 "display": "Plain X-ray of chest (procedure)"}]},
            "subject": {"reference": f"Patient/{with_xray}"},
            "performedDateTime": "2021-05-04T10:00:00Z",
        }  # fmt: skip
        procedure_id = post(http, procedure)
        settings = Settings(home=tmp_path)  # type: ignore[call-arg]

        links = link_examples(settings, base, [without, with_xray])
        (link,) = links.values()
        assert link["patient_ref"] == f"Patient/{with_xray}"
        study = http.get(link["imaging_study"]).json()
        assert study["procedureReference"]["reference"] == f"Procedure/{procedure_id}"
        assert study["started"] == "2021-05-04T10:00:00Z"
        assert "not acquired from this patient" in study["description"]
        assert {"system": "urn:dicom:uid", "value": f"urn:oid:{next(iter(links))}"} in study[
            "identifier"
        ]

        assert link_examples(settings, base, [without, with_xray]) == links, "made once"
        mine = http.get("ImagingStudy", params={"patient": with_xray}).json().get("entry", [])
        assert len(mine) == 1
        assert not http.get("ImagingStudy", params={"patient": without}).json().get("entry")
        marks = [i["system"] for i in mine[0]["resource"]["identifier"]]
        assert EXAMPLE_SYSTEM in marks
