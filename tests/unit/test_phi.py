"""Pseudonymising what goes to a hosted model: the mapping, the wrapper, the host check."""

from __future__ import annotations

import json
import socket
from datetime import date
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import SecretStr

from fakes import ScriptedChatModel
from wardround.agents.models import make_chat_model
from wardround.agents.phi import Pseudonymiser, date_offset, load_key
from wardround.agents.phi_dates import shift_dates
from wardround.agents.phi_hosts import is_on_this_machine
from wardround.agents.phi_model import PhiRefused, PseudonymisingChatModel, in_patient_scope
from wardround.graphs.copilot.audit import AuditLog, audit_phi_events
from wardround.settings import Settings

KEY = b"k" * 32
PATIENT = {
    "resourceType": "Patient",
    "id": "cdb486b4-716b",
    "identifier": [
        {"type": {"coding": [{"code": "MR"}]}, "value": "9660712"},
        {"type": {"coding": [{"code": "SS"}]}, "value": "999-29-4414"},
    ],
    "name": [{"use": "official", "family": "McDermott869", "given": ["Rubin"]}],
    "birthDate": "1983-12-06",
    "telecom": [
        {"system": "phone", "value": "555-754-8483"},
        {"system": "email", "value": "rubin.mcdermott@example.com"},
    ],
    "address": [{"line": ["9570 Lehner Track"], "city": "Boston", "postalCode": "02118"}],
}
NOTE = (
    "Rubin McDermott869 (MRN 9660712, SSN 999-29-4414), born 1983-12-06, of 9570 Lehner "
    "Track, Boston 02118; call (555) 754 8483 or rubin.mcdermott@example.com. Seen on "
    "May 1, 2023 and 2023-05-11T09:30:00Z; mr. mcdermott's potassium 4.1 mmol/L."
)
SECRETS = ["Rubin", "McDermott", "9660712", "4414", "8483", "Lehner", "Boston", "02118",
           "example.com", "1983-12-06", "2023-05-11", "May 1, 2023", "cdb486b4"]  # fmt: skip


def test_every_identifier_becomes_a_stable_token() -> None:
    masked, counts = Pseudonymiser(PATIENT, KEY).mask_text(NOTE)
    assert not [s for s in SECRETS if s.lower() in masked.lower()], masked
    assert "[PATIENT-NAME-1] [PATIENT-NAME-2]" in masked and "[MRN-1]" in masked
    assert "[PHONE-1]" in masked and "[EMAIL-1]" in masked and "[ADDRESS-1]" in masked
    assert "4.1 mmol/L" in masked, "lab values are not identifiers"
    assert counts["name"] == 3 and counts["mrn"] == 1 and counts["date"] == 3
    again, _ = Pseudonymiser(PATIENT, KEY).mask_text("Rubin's MRN is 9660712")
    assert again == "[PATIENT-NAME-1]'s MRN is [MRN-1]", "the same token in every call"


def test_the_date_shift_keeps_intervals_and_depends_on_key_and_patient() -> None:
    days = date_offset(KEY, "p1")
    assert 30 <= abs(days) < 730 and days == date_offset(KEY, "p1")
    assert date_offset(b"other key", "p1") != days or date_offset(KEY, "p2") != days
    shifted = shift_dates("from 2023-05-01 to 2023-05-11", days).split()
    first, last = date.fromisoformat(shifted[1]), date.fromisoformat(shifted[3])
    assert (last - first).days == 10 and first != date(2023, 5, 1)


def test_written_dates_keep_their_format_both_ways() -> None:
    text = "on 5/1/2023, 1st May 2023, Jan 5, 2020 and 2023-05; not 2023-02-30 or 2019-2023"
    there = shift_dates(text, 100)
    assert "8/9/2023" in there and "9th August 2023" in there and "Apr 14, 2020" in there
    assert "2023-08" in there and "2023-02-30" in there and "2019-2023" in there
    assert shift_dates(there, -100) == text


def test_masking_then_unmasking_gives_the_text_back() -> None:
    p = Pseudonymiser(PATIENT, KEY)
    masked, _ = p.mask_text(NOTE)
    back, counts = p.unmask_text(masked)
    assert counts["name"] == 3 and counts["date"] == 3
    # Tokens come back as the Patient writes the value; dates exactly as they were.
    assert back == NOTE.replace("555) 754 8483", "555-754-8483").replace(
        "mcdermott's", "McDermott's"
    )


def test_json_and_tool_call_args_are_mapped_inside() -> None:
    p = Pseudonymiser({**PATIENT, "name": [{"family": 'O"Hara', "given": ["Rubin"]}]}, KEY)
    masked, _ = p.mask({"q": 'O"Hara seen 2023-05-01', "n": 3, "list": ["Rubin"]})
    assert masked["n"] == 3 and masked["list"] == ["[PATIENT-NAME-1]"]
    reply = json.dumps({"answer": masked["q"]})
    back, _ = p.unmask_text(reply)
    assert json.loads(back) == {"answer": 'O"Hara seen 2023-05-01'}, "escaped inside JSON"


def _wrapped(inner: ScriptedChatModel) -> PseudonymisingChatModel:
    return PseudonymisingChatModel(inner=inner, host="api.example.com", key=KEY)


async def test_the_wrapper_masks_out_and_reidentifies_back(tmp_path: Path) -> None:
    p = Pseudonymiser(PATIENT, KEY)
    shifted = p.mask_text("2023-05-11")[0]
    call = {"name": "search", "args": {"who": "[PATIENT-NAME-1]", "since": shifted}, "id": "c1"}
    inner = ScriptedChatModel(
        replies=[
            AIMessage(
                content=json.dumps({"answer": f"[PATIENT-NAME-1] on {shifted}"}), tool_calls=[call]
            )
        ]
    )
    model = _wrapped(inner)
    model.audit_path = tmp_path / "audit.jsonl"
    audit_phi_events()
    history = [
        HumanMessage("When was Rubin seen? MRN 9660712"),
        AIMessage("", tool_calls=[{"name": "read", "args": {"mrn": "9660712"}, "id": "c0"}]),
        ToolMessage("Encounter 2023-05-11 Boston", tool_call_id="c0"),
    ]
    with in_patient_scope(p):
        reply = await model.ainvoke(
            history, response_format={"enum": ["Rubin McDermott869", "2023-05-11"]}
        )
    sent = inner.calls[0]
    body = json.dumps([m.model_dump() for m in sent["messages"]]) + json.dumps(sent["kwargs"])
    assert not [s for s in SECRETS if s in body], body
    assert sent["messages"][1].tool_calls[0]["args"] == {"mrn": "[MRN-1]"}
    assert json.loads(str(reply.content)) == {"answer": "Rubin on 2023-05-11"}
    assert reply.tool_calls[0]["args"] == {"who": "Rubin", "since": "2023-05-11"}
    entries = AuditLog(model.audit_path).entries()
    assert [e["action"] for e in entries] == ["phi_egress", "phi_reidentify"]
    assert entries[0]["host"] == "api.example.com" and entries[0]["replaced"]["mrn"] == 2
    assert entries[1]["replaced"] == {"name": 2, "date": 2}
    logged = model.audit_path.read_text()
    assert not [s for s in SECRETS[:8] if s in logged], "counts, no values (the id and host)"


async def test_no_patient_or_an_unread_patient_means_nothing_is_sent() -> None:
    inner = ScriptedChatModel(replies=["never"])
    with pytest.raises(PhiRefused, match="no patient"):
        await _wrapped(inner).ainvoke("hello")
    with in_patient_scope(PhiRefused("Patient/x could not be read")), pytest.raises(PhiRefused):
        await _wrapped(inner).ainvoke("hello")
    assert inner.calls == [] and inner.replies == ["never"]


def test_loopback_and_this_machine_are_local_others_hosted() -> None:
    assert is_on_this_machine("127.0.0.1") and is_on_this_machine("localhost")
    assert is_on_this_machine(socket.gethostname()) and is_on_this_machine("::1")
    assert not is_on_this_machine("10.250.1.2") and not is_on_this_machine("api.invalid")
    assert not is_on_this_machine("127.0.0.1", []), "an explicit list replaces the check"
    assert is_on_this_machine("gpu-box", ["gpu-box"])


def test_make_chat_model_wraps_only_a_hosted_endpoint_with_the_setting_on(
    tmp_path: Path,
) -> None:
    def settings(url: str, **kw: object) -> Settings:
        return Settings(home=tmp_path, model_base_url=url, model_name="m", **kw)  # type: ignore[arg-type]

    hosted = "https://api.example.com/v1"
    assert not isinstance(make_chat_model(settings(hosted)), PseudonymisingChatModel)
    local = make_chat_model(settings("http://127.0.0.1:9/v1", phi_pseudonymise=True))
    assert not isinstance(local, PseudonymisingChatModel)
    model = make_chat_model(settings(hosted, phi_pseudonymise=True))
    assert isinstance(model, PseudonymisingChatModel) and model.host == "api.example.com"
    assert model.metadata == model.inner.metadata and (tmp_path / "phi.key").exists()
    assert model.key == load_key(tmp_path / "phi.key"), "one key, kept"
    keyed = make_chat_model(settings(hosted, phi_pseudonymise=True, phi_key=SecretStr("s")))
    assert isinstance(keyed, PseudonymisingChatModel) and keyed.key == b"s"
