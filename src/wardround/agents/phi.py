"""Pseudonymise one patient's identifiers in what is sent to a hosted model, and back.

The identifiers come from the patient's FHIR Patient resource (a dict; this layer reads no
FHIR): name parts, identifier values (MRN and others), the Patient id, phone numbers and
emails, address lines, city and postcode. Each becomes a stable token ("[PATIENT-NAME-1]",
"[MRN-1]"); every date moves by a per-patient offset of whole days, derived from a secret
key, so intervals between dates are kept. Only what the Patient resource names is caught:
a name written in a free-text note and nowhere in the Patient is sent as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wardround.agents.phi_dates import Span, apply_spans, date_spans

# What each kind of identifier is called in its token.
LABELS = {
    "name": "PATIENT-NAME",
    "mrn": "MRN",
    "identifier": "ID",
    "phone": "PHONE",
    "email": "EMAIL",
    "address": "ADDRESS",
}
TOKEN = re.compile(r"\[(" + "|".join(LABELS.values()) + r")-(\d+)\]")
MIN_OFFSET_DAYS, OFFSET_SPAN_DAYS = 30, 700  # 30 to 729 days, either way
MR_CODE = "MR"


def _digits_pattern(value: str) -> str:
    """A number written with any separators: "555-754-8483" also finds "(555) 754 8483"."""
    digits = re.sub(r"\D", "", value)
    return r"(?<![\d.])" + r"[\s().+-]*".join(digits) + r"(?!\d|\.\d)"  # not in a decimal


def _text_pattern(value: str) -> str:
    words = [re.escape(w) for w in value.split()]
    return r"(?<![A-Za-z0-9])" + r"\s+".join(words) + r"(?![A-Za-z0-9])"


def _is_number(value: str) -> bool:
    return bool(re.fullmatch(r"[\d\s().+-]+", value)) and len(re.sub(r"\D", "", value)) >= 4


def _codes(concept: Any) -> set[str]:
    codings = (concept or {}).get("coding") or [] if isinstance(concept, dict) else []
    return {str(c.get("code")) for c in codings if isinstance(c, dict)}


def _names(patient: dict[str, Any]) -> Iterator[str]:
    for name in patient.get("name") or []:
        for part in [*(name.get("given") or []), name.get("family") or ""]:
            yield part
            yield re.sub(r"\d+$", "", part)  # Synthea's "Rubin869" is "Rubin" in a note
        yield from str(name.get("text") or "").split()


def identifiers(patient: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, value) for each identifying value of a Patient resource, in a fixed order."""
    yield from (("name", n) for n in _names(patient) if len(n) >= 2)
    for ident in patient.get("identifier") or []:
        kind = "mrn" if MR_CODE in _codes(ident.get("type")) else "identifier"
        yield kind, str(ident.get("value") or "")
    yield "identifier", str(patient.get("id") or "")
    for point in patient.get("telecom") or []:
        kind = "email" if point.get("system") == "email" else "phone"
        yield kind, str(point.get("value") or "")
    for address in patient.get("address") or []:
        for value in [*(address.get("line") or []), address.get("city"), address.get("postalCode")]:
            yield "address", str(value or "")


def _terms(patient: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, value, token): one token per distinct value, numbered per kind."""
    tokens: dict[str, str] = {}
    numbered: dict[str, int] = {}
    terms = []
    for kind, value in identifiers(patient):
        value = value.strip()
        if len(re.sub(r"\W", "", value)) < 2 or value.lower() in tokens:
            continue
        numbered[kind] = numbered.get(kind, 0) + 1
        tokens[value.lower()] = token = f"[{LABELS[kind]}-{numbered[kind]}]"
        terms.append((kind, value, token))
    return terms


def date_offset(key: bytes, patient_id: str) -> int:
    """Whole days every date of this patient moves by: keyed, so stable and not guessable."""
    digest = hmac.new(key, patient_id.encode(), hashlib.sha256).digest()
    days = MIN_OFFSET_DAYS + int.from_bytes(digest[:4], "big") % OFFSET_SPAN_DAYS
    return days if digest[4] & 1 else -days


def load_key(path: Path) -> bytes:
    """The pseudonymisation key kept at `path`, made (readable by its owner only) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _looks_like_json(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


class Pseudonymiser:
    """One patient's mapping: `mask` what leaves, `unmask` what comes back. Each returns the
    new value and how many items of each kind it replaced (for the audit; no values)."""

    def __init__(self, patient: dict[str, Any], key: bytes) -> None:
        self.patient_id = str(patient.get("id") or "")
        self.offset_days = date_offset(key, self.patient_id)
        self.terms = _terms(patient)
        self._values = {token: value for _, value, token in self.terms}
        self._patterns = [
            (kind, re.compile(_digits_pattern(v) if _is_number(v) else _text_pattern(v), re.I), t)
            for kind, v, t in self.terms
        ]

    def mask_text(self, text: str) -> tuple[str, dict[str, int]]:
        spans: list[Span] = [
            (m.start(), m.end(), token, kind)
            for kind, pattern, token in self._patterns
            for m in pattern.finditer(text)
        ]
        spans += [(s, e, new, "date") for s, e, new in date_spans(text, self.offset_days)]
        return apply_spans(text, spans)

    def unmask_text(self, text: str) -> tuple[str, dict[str, int]]:
        """Tokens back to values (JSON-escaped inside JSON text), dates shifted back."""
        escape = _looks_like_json(text)
        spans: list[Span] = []
        for m in TOKEN.finditer(text):
            value = self._values.get(m[0])
            if value is not None:
                new = json.dumps(value)[1:-1] if escape else value
                kind = next(k for k, label in LABELS.items() if label == m[1])
                spans.append((m.start(), m.end(), new, kind))
        spans += [(s, e, new, "date") for s, e, new in date_spans(text, -self.offset_days)]
        return apply_spans(text, spans)

    def mask(self, value: Any) -> tuple[Any, dict[str, int]]:
        """Every string inside `value` (a string, or JSON-like lists and dicts) masked."""
        return _walk(value, self.mask_text)

    def unmask(self, value: Any) -> tuple[Any, dict[str, int]]:
        return _walk(value, self.unmask_text)


def _walk(value: Any, fn: Any) -> tuple[Any, dict[str, int]]:
    """`fn` over every string in `value` (dict values, not keys), with the counts summed."""
    counts: dict[str, int] = {}

    def visit(item: Any) -> Any:
        if isinstance(item, str):
            new, found = fn(item)
            for kind, n in found.items():
                counts[kind] = counts.get(kind, 0) + n
            return new
        if isinstance(item, dict):
            return {k: visit(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(visit(v) for v in item)
        return item

    return visit(value), counts


def add_counts(*many: dict[str, int]) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in many:
        for kind, n in counts.items():
            total[kind] = total.get(kind, 0) + n
    return total
