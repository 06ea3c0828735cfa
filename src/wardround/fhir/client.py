"""An async client for any FHIR R4 server (HAPI, SEKMET, Google Cloud Healthcare, Azure, Epic).

Only the REST calls an agent needs: search (following `link[next]`, with a page cap), read
by reference, `Patient/$everything` (with a fallback for servers that lack it), create and
transaction. Every read is bounded (see `bounded.py`): searches ask for pages of `page_size`
(`_count`), a read stops at `max_records` and says so (`Records.truncated`), a body above
`max_body_bytes` is refused, and a `$everything` above `everything_max_bytes` (servers that
ignore `_count` there send a whole chart as one page) is replaced by paged per-type searches. Requests are retried with exponential backoff on 429, 5xx and connection
errors; failures surface as the exceptions in `errors.py`.

Search parameters are always sent as (name, value) pairs through httpx, which percent-
encodes them, and names/types/ids are checked against FHIR's grammar, so text that came
from a model cannot smuggle extra parameters or path segments into a request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from wardround.fhir.auth import auth_from_settings
from wardround.fhir.bounded import ReadState, Records
from wardround.fhir.compartment import CompartmentGuard, DropHook, belongs_to
from wardround.fhir.errors import (
    FhirAuthError,
    FhirError,
    FhirForeignRecord,
    FhirNotFound,
    FhirResponseTooLarge,
    FhirUnavailable,
    FhirUnsupportedSearch,
)

if TYPE_CHECKING:
    from wardround.settings import Settings

__all__ = [
    "FhirAuthError",
    "FhirClient",
    "FhirError",
    "FhirForeignRecord",
    "FhirNotFound",
    "FhirResponseTooLarge",
    "FhirUnavailable",
    "FhirUnsupportedSearch",
    "Records",
    "SearchParams",
    "check_id",
    "check_resource_type",
    "escape_value",
    "parse_reference",
]

log = logging.getLogger(__name__)

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
# A search parameter name with optional modifiers/chains (`code:text`, `subject:Patient.name`,
# `_has:Observation:patient:code`); never `&`, `=`, `?`, `#` or `/`.
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*([:.][A-Za-z_][A-Za-z0-9_\-]*)*")

JSON_TYPES = "application/fhir+json"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
UNAVAILABLE_STATUS = frozenset({429, 502, 503, 504})
# Statuses meaning "this server does not offer $everything" rather than "no such patient".
UNSUPPORTED_STATUS = frozenset({400, 404, 405, 422, 501})
# Searches ask the server to refuse parameters it does not know: R4's default, lenient
# handling ignores them, and an ignored `patient` returns every patient's records.
STRICT = {"Prefer": "handling=strict"}
# Words of a message saying a parameter was refused or ignored (SEKMET: "Unknown search
# parameter 'patient' for CareTeam; parameter ignored").
_REFUSED = re.compile(r"\b(unknown|unsupported|not supported|ignored|invalid)\b", re.I)
_CLAUSES = re.compile(r"[.;]\s|\n")

# Searched one by one (patient=<id>) when a server has no Patient/$everything.
EVERYTHING_FALLBACK_TYPES = (
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "AllergyIntolerance",
    "Procedure",
    "Encounter",
    "DiagnosticReport",
    "Immunization",
    "DocumentReference",
    "ServiceRequest",
    "CarePlan",
    "MedicationAdministration",
)

# Bounds on every read (see bounded.py); the client's and the settings' defaults.
PAGE_SIZE = 100
MAX_RECORDS = 10_000
MAX_BODY_BYTES = 32 * 2**20
EVERYTHING_MAX_BYTES = 4 * 2**20
_OVERSIZED_MEMO = 1000

ParamValue = str | int | float
SearchParams = Mapping[str, ParamValue | Sequence[ParamValue]] | Sequence[tuple[str, ParamValue]]


def check_resource_type(resource_type: str) -> str:
    """Return `resource_type` if it is a syntactically valid FHIR type name, else raise ValueError."""
    if not isinstance(resource_type, str) or not RESOURCE_TYPE.fullmatch(resource_type):
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")
    return resource_type


def check_id(resource_id: str) -> str:
    """Return `resource_id` if it matches FHIR's id grammar ([A-Za-z0-9-.]{1,64}), else raise."""
    if not isinstance(resource_id, str) or not FHIR_ID.fullmatch(resource_id):
        raise ValueError(f"not a FHIR id: {resource_id!r}")
    return resource_id


def parse_reference(reference: str) -> tuple[str, str]:
    """Split `Type/id` into its parts, validating both; raise ValueError otherwise."""
    if not isinstance(reference, str) or reference.count("/") != 1:
        raise ValueError(f"not a FHIR reference of the form Type/id: {reference!r}")
    resource_type, resource_id = reference.split("/")
    return check_resource_type(resource_type), check_id(resource_id)


def escape_value(value: str) -> str:
    """Escape FHIR search syntax characters (`\\ , $ |`) so a value is matched literally."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|")


def _query(params: SearchParams | None) -> list[tuple[str, str]]:
    items: list[tuple[str, Any]] = []
    if params is None:
        return []
    if isinstance(params, Mapping):
        for name, value in params.items():
            if isinstance(value, list | tuple):
                items.extend((name, v) for v in value)
            else:
                items.append((name, value))
    else:
        items = list(params)
    out: list[tuple[str, str]] = []
    for name, value in items:
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            raise ValueError(f"not a FHIR search parameter name: {name!r}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"search parameter {name} needs a str or number, got {value!r}")
        out.append((name, str(value)))
    return out


def _typed_patient(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The query with each bare `patient=<id>` written as `patient=Patient/<id>`."""
    return [
        (name, f"Patient/{value}" if name == "patient" and FHIR_ID.fullmatch(value) else value)
        for name, value in query
    ]


@dataclass(frozen=True)
class _Scope:
    """A read made for one patient: what to check its results against. `param` is the
    search parameter that scopes it (None for `$everything`), `via` names it in reports."""

    patient_id: str
    via: str
    resource_type: str = "Patient"
    param: str | None = None


def _scope_of(resource_type: str, query: list[tuple[str, str]]) -> _Scope | None:
    """The patient a search asks for (`patient=<id>`, `patient=` or `subject=Patient/<id>`)."""
    for name, value in query:
        pid = value.removeprefix("Patient/") if name in ("patient", "subject") else ""
        if (name == "patient" or value.startswith("Patient/")) and FHIR_ID.fullmatch(pid):
            return _Scope(pid, f"search {resource_type}", resource_type, name)
    return None


def refuses(text: str, param: str) -> bool:
    """Whether a server's message says search parameter `param` was unknown or ignored
    (the clause naming it, not a list of valid parameters that may follow)."""
    named = re.compile(rf"(?<![\w.:-]){re.escape(param)}(?![\w.:-])")
    return any(_REFUSED.search(c) and named.search(c) for c in _CLAUSES.split(text))


def _outcome_texts(entries: list[Any]) -> list[str]:
    """The issue texts of a search Bundle's OperationOutcome entries."""
    texts: list[str] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome":
            for issue in resource.get("issue") or []:
                if isinstance(issue, dict):
                    detail = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
                    texts.append(str(detail or ""))
    return texts


def search_params_of(capabilities: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Each resource type's search parameter names, from a CapabilityStatement (types
    listed without any are left out: nothing is known of them)."""
    found: dict[str, frozenset[str]] = {}
    for rest in capabilities.get("rest") or []:
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        for resource in rest.get("resource") or []:
            params = resource.get("searchParam") if isinstance(resource, dict) else None
            if resource.get("type") and params:
                found[str(resource["type"])] = frozenset(str(p.get("name")) for p in params)
    return found


def _diagnostics(response: httpx.Response) -> str:
    """The useful part of an error body: OperationOutcome diagnostics, OAuth error, or text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        issues = body.get("issue") or []
        texts = [
            i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code", "")
            for i in issues
            if isinstance(i, dict)
        ]
        if texts:
            return "; ".join(t for t in texts if t)[:500]
        if body.get("error"):
            return f"{body['error']}: {body.get('error_description', '')}".strip(": ")
    return response.text.strip()[:300]


class FhirClient:
    """Async FHIR R4 REST client. Use `async with FhirClient.from_settings(s) as fhir: ...`.

    Args:
        base_url: the service base, e.g. `http://127.0.0.1:8090/fhir`.
        auth: an `httpx.Auth` (see `auth.py`: `BearerAuth`, `SmartBackendAuth`) or None.
        timeout: seconds per request.
        max_pages: default cap on pages followed by `search`/`everything`.
        page_size: the `_count` every search asks for (a caller's smaller one is kept).
        max_records: at most this many records per read; a read stopped here returns
            `Records` with `truncated` set (and notes it, see `bounded.note_partial`).
        max_body_bytes: a response body above this is refused (FhirResponseTooLarge).
        everything_max_bytes: a `$everything` page above this is dropped unread and the chart
            read by paged per-type searches instead.
        retries: extra attempts on 429/5xx/connection errors (POST only retries when the
            request cannot have been processed: connect errors, 429, 503).
        backoff_s, max_backoff_s: exponential backoff base and ceiling (jittered).
        max_retry_after_s: a `Retry-After` (seconds or an HTTP date) is waited out in full
            up to this; a server asking for longer gets a clear error at once instead.
        transport: an httpx transport (tests pass `httpx.ASGITransport` or `MockTransport`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        max_pages: int = 100,
        page_size: int = PAGE_SIZE,
        max_records: int = MAX_RECORDS,
        max_body_bytes: int = MAX_BODY_BYTES,
        everything_max_bytes: int = EVERYTHING_MAX_BYTES,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"FHIR base URL must be http(s)://host/...: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.max_pages = max_pages
        if min(page_size, max_records, max_body_bytes, everything_max_bytes) < 1:
            raise ValueError("page_size, max_records and the byte bounds must be positive")
        self.page_size = page_size
        self.max_records = max_records
        self.max_body_bytes = max_body_bytes
        self.everything_max_bytes = everything_max_bytes
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._auth = auth
        self._http = httpx.AsyncClient(
            auth=auth,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Accept": JSON_TYPES},
            # As many kept open as may be used (httpx's default opens up to 100 but keeps 20,
            # so a busy API reopens the rest); not more, as httpcore checks every pooled
            # connection on each request: 100 cost a little more CPU than 20 in the load bench.
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        )
        self._has_everything: bool | None = None
        # Patients whose `$everything` came back above everything_max_bytes: read per type.
        self._oversized: set[str] = set()
        # Whether this server needs `patient=Patient/<id>` (None: not known yet).
        self._typed_patient: bool | None = None
        # Records of other patients are dropped here; `dropped` counts them.
        self.compartment = CompartmentGuard(self.base_url)
        # Search parameters per type, read from the CapabilityStatement once.
        self._search_params: dict[str, frozenset[str]] | None = None
        self._capabilities_lock = asyncio.Lock()
        # Types this server cannot search by patient, and why (said once, in the log).
        self._unsearchable: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> FhirClient:
        """Build from `Settings` (base URL, auth, timeout, page cap)."""
        return cls(
            settings.fhir_base_url,
            auth=auth_from_settings(settings, transport=transport),
            timeout=settings.fhir_timeout_s,
            max_pages=settings.fhir_max_pages,
            page_size=settings.fhir_page_size,
            max_records=settings.fhir_max_records,
            max_body_bytes=settings.fhir_max_body_bytes,
            everything_max_bytes=settings.fhir_everything_max_bytes,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (and the auth's token client, if it has one)."""
        await self._http.aclose()
        closer = getattr(self._auth, "aclose", None)
        if closer is not None:
            await closer()

    # ------------------------------------------------------------------ reads

    async def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (`GET [base]/metadata`)."""
        return await self._get_json(f"{self.base_url}/metadata")

    @property
    def dropped(self) -> int:
        """How many records of other patients this client has dropped so far."""
        return self.compartment.dropped

    def on_drop(self, hook: DropHook) -> None:
        """Call `hook(DroppedRecord)` for every record dropped from now on."""
        self.compartment.on_drop(hook)

    async def search_parameters(self, resource_type: str) -> frozenset[str] | None:
        """The search parameters the CapabilityStatement lists for a type (empty for a type
        it leaves out; None when it lists none at all); read once per client."""
        if self._search_params is None:
            async with self._capabilities_lock:
                if self._search_params is None:
                    self._search_params = await self._read_search_params()
        if not self._search_params:
            return None
        return self._search_params.get(resource_type, frozenset())

    async def patient_param(self, resource_type: str) -> str:
        """The search parameter that finds a type's records by patient here: `patient`, or
        `subject` where the server has only that. Raises FhirUnsupportedSearch if neither."""
        if resource_type in self._unsearchable:
            raise FhirUnsupportedSearch(
                self._unsearchable[resource_type], resource_type=resource_type
            )
        names = await self.search_parameters(resource_type)
        if names is None or "patient" in names:
            return "patient"
        if "subject" in names:
            return "subject"
        raise self._unsupported(
            resource_type, "its CapabilityStatement lists no `patient` or `subject` search for it"
        )

    async def unsearchable(self, resource_types: Iterable[str]) -> dict[str, str]:
        """Of `resource_types`, those this server cannot search by patient, with the reason."""
        reasons: dict[str, str] = {}
        for resource_type in resource_types:
            try:
                await self.patient_param(resource_type)
            except FhirUnsupportedSearch as exc:
                reasons[resource_type] = str(exc)
        return reasons

    async def read(self, reference: str, *, patient_id: str | None = None) -> dict[str, Any]:
        """Read one resource by `Type/id`. Raises FhirNotFound, or ValueError on a bad reference.

        With `patient_id` (implied when reading a Patient), a record outside that patient's
        compartment is dropped, reported and refused with FhirForeignRecord."""
        resource_type, resource_id = parse_reference(reference)
        resource = await self._get_json(f"{self.base_url}/{resource_type}/{resource_id}")
        if resource.get("resourceType") != resource_type:
            raise FhirError(
                f"GET {reference} returned a {resource.get('resourceType')!r}, not a {resource_type}"
            )
        owner = patient_id or (resource_id if resource_type == "Patient" else None)
        if owner is not None and not belongs_to(resource, owner):
            self.compartment.report(resource, owner, f"read {reference}")
            raise FhirForeignRecord(
                f"GET {reference} returned a record that is not Patient/{owner}'s; it was dropped",
                url=f"{self.base_url}/{reference}",
            )
        if resource.get("id") not in (None, resource_id):
            raise FhirError(f"GET {reference} returned {resource_type}/{resource.get('id')}")
        return resource

    async def search(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        limit: int | None = None,
        max_pages: int | None = None,
    ) -> Records:
        """Search `resource_type` and return the matching resources across pages.

        `params` is a mapping (a list value repeats the parameter, i.e. AND) or a list of
        (name, value) pairs. Values are sent verbatim but percent-encoded, so a `&` or `=`
        inside a value stays inside it; use `escape_value` for values that must not be
        read as FHIR OR-lists (`,`) or system|code (`|`). Pages of `page_size` are asked for
        (`_count`, unless a smaller one is given) and `link[next]` followed up to
        `max_pages` pages (default: the client's), stopping once `limit` resources (at most
        `max_records`) are in hand; the result's `truncated` says the server had more.
        Included resources (`_include`) are returned too; OperationOutcome entries are dropped.

        A search for one patient (`patient=<id>`, or `subject=Patient/<id>`) returns only
        records in that patient's compartment (others are dropped and reported); it is sent
        as `subject` where the server has no `patient` for the type, and raises
        FhirUnsupportedSearch where it has neither or says it ignored the parameter.
        """
        found = Records()
        state = ReadState()
        async for page in self.iter_search(
            resource_type, params, limit=limit, max_pages=max_pages, state=state
        ):
            found.extend(page)
        found.truncated, found.why = state.truncated, state.why
        return found

    async def iter_search(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        limit: int | None = None,
        max_pages: int | None = None,
        state: ReadState | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """`search`, one page at a time (memory: one page); `state` says how it went."""
        check_resource_type(resource_type)
        state = state if state is not None else ReadState()
        url, query = f"{self.base_url}/{resource_type}", self._paged(_query(params), limit)
        scope = _scope_of(resource_type, query)
        if scope is not None:
            query, scope = await self._scoped(query, scope)
        if self._typed_patient:
            query = _typed_patient(query)
        pages = self._pages(url, query, limit=limit, max_pages=max_pages, scope=scope, state=state)
        async for page in pages:
            yield page
        typed = _typed_patient(query)
        if typed == query or self._typed_patient is False:
            return
        if state.records:  # this server matches bare ids: never ask twice
            self._typed_patient = False
            return
        # `patient=<id>` is valid FHIR, yet some servers (Medplum's in-memory repository)
        # match reference parameters only as `Type/id`: an empty result is asked again so,
        # with the page budget back (the empty page read nothing).
        state.pages = 0
        pages = self._pages(url, typed, limit=limit, max_pages=max_pages, scope=scope, state=state)
        async for page in pages:
            yield page
        if state.records:
            log.info("%s matches patient=Patient/<id> only; sending that form", self.base_url)
            self._typed_patient = True

    def _paged(self, query: list[tuple[str, str]], limit: int | None) -> list[tuple[str, str]]:
        """The query with a `_count` of at most `page_size` (and of `limit`, if smaller)."""
        size = min(self.page_size, limit or self.page_size)
        asked = [v for name, v in query if name == "_count"]
        if asked and asked[-1].isdigit() and 0 < int(asked[-1]) <= size:
            return query
        return [*(p for p in query if p[0] != "_count"), ("_count", str(size))]

    async def everything(
        self,
        patient_id: str,
        *,
        count: int | None = None,
        max_pages: int | None = None,
        fallback_types: Sequence[str] = EVERYTHING_FALLBACK_TYPES,
    ) -> Records:
        """All of a patient's resources via `Patient/{id}/$everything`, paging if the server pages.

        `count` is the page size asked for (`_count`, part of the operation's definition;
        default `page_size`); at most `max_pages` pages and `max_records` records are read,
        so a huge chart may come back truncated (`Records.truncated`, logged and noted).
        Resources outside the patient's compartment are dropped and reported.

        On a server without the operation, or one whose `$everything` page is above
        `everything_max_bytes` (servers that ignore `_count` send the whole chart at once),
        reads the Patient and searches each of `fallback_types` by patient, paged (types the
        server rejects, or cannot search by patient, are skipped). Raises FhirNotFound if the
        patient does not exist. `iter_everything` gives the same one page at a time.
        """
        found = Records()
        state = ReadState()
        async for page in self.iter_everything(
            patient_id, count=count, max_pages=max_pages, fallback_types=fallback_types,
            state=state,
        ):  # fmt: skip
            found.extend(page)
        found.truncated, found.why = state.truncated, state.why
        return found

    async def iter_everything(
        self,
        patient_id: str,
        *,
        count: int | None = None,
        max_pages: int | None = None,
        fallback_types: Sequence[str] = EVERYTHING_FALLBACK_TYPES,
        state: ReadState | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """`everything`, one page at a time (memory: one page); `state` says how it went
        (`fell_back`: read per type; `truncated`: a cap was reached)."""
        check_id(patient_id)
        state = state if state is not None else ReadState()
        unsupported = False
        if self._has_everything is not False and patient_id not in self._oversized:
            params = [("_count", str(count or self.page_size))]
            scope = _Scope(patient_id, "$everything")
            url = f"{self.base_url}/Patient/{patient_id}/$everything"
            try:
                async for page in self._pages(
                    url, params, max_pages=max_pages, scope=scope, state=state,
                    max_bytes=self.everything_max_bytes,
                ):  # fmt: skip
                    self._has_everything = True
                    yield page
                self._has_everything = True
                return
            except FhirResponseTooLarge as exc:
                if state.pages:  # pages already given out: a fallback would repeat them
                    raise
                log.info("%s; reading Patient/%s per type instead", exc, patient_id)
                if len(self._oversized) >= _OVERSIZED_MEMO:
                    self._oversized.clear()
                self._oversized.add(patient_id)
            except FhirError as exc:
                if isinstance(exc, FhirUnavailable | FhirAuthError) or state.pages:
                    raise
                if exc.status not in UNSUPPORTED_STATUS or self._has_everything:
                    raise
                log.info("no usable $everything at %s (%s); searching per type", self.base_url, exc)
                unsupported = True
        patient = await self.read(f"Patient/{patient_id}")
        if unsupported:  # not before: a 404 may have meant "no such patient"
            self._has_everything = False
        state.fell_back = True
        state.records += 1
        yield [patient]
        for resource_type in fallback_types:
            # A page size, or servers' defaults (20) make long charts many pages.
            query: SearchParams = {"patient": patient_id, "_count": count or self.page_size}
            sub = ReadState()
            try:
                async for page in self.iter_search(
                    resource_type, query, max_pages=max_pages, state=sub
                ):
                    yield page
            except FhirUnsupportedSearch:
                pass  # said once, when learnt
            except FhirError as exc:
                if isinstance(exc, FhirUnavailable) or exc.status not in (400, 403, 404):
                    raise
                if sub.pages:  # part of the type given out: not a type the server lacks
                    raise
            state.records += sub.records
            state.pages += sub.pages
            if sub.truncated:
                state.truncated, state.why = True, sub.why

    async def _read_search_params(self) -> dict[str, frozenset[str]]:
        try:
            return search_params_of(await self.capabilities())
        except (FhirUnavailable, FhirAuthError):
            raise
        except FhirError as exc:  # the results are still checked; only the sieve is lost
            log.warning("no CapabilityStatement from %s (%s)", self.base_url, exc)
            return {}

    async def _scoped(
        self, query: list[tuple[str, str]], scope: _Scope
    ) -> tuple[list[tuple[str, str]], _Scope]:
        """The query with the patient parameter this server has for the type."""
        param = await self.patient_param(scope.resource_type)
        if param == scope.param or scope.param != "patient":
            return query, scope
        value = f"Patient/{scope.patient_id}"
        query = [(param, value) if name == "patient" else (name, v) for name, v in query]
        return query, _Scope(scope.patient_id, scope.via, scope.resource_type, param)

    def _unsupported(self, resource_type: str, why: str) -> FhirUnsupportedSearch:
        """Remember (and log once, at INFO) that a type cannot be searched by patient here."""
        if resource_type not in self._unsearchable:
            message = (
                f"{self.base_url} cannot search {resource_type} by patient ({why}), so "
                f"{resource_type} records are left out: a search that ignores the patient "
                "returns every patient's records"
            )
            self._unsearchable[resource_type] = message
            # INFO, not a warning on every command: the manifest's "Left out" line and the
            # search tool's reply say it where a reader meets it.
            log.info("%s", message)
        return FhirUnsupportedSearch(self._unsearchable[resource_type], resource_type=resource_type)

    # ----------------------------------------------------------------- writes

    async def create(
        self, resource: dict[str, Any], *, if_none_exist: str | None = None
    ) -> dict[str, Any]:
        """POST a new resource; returns the stored resource (with its server-assigned id).

        `if_none_exist` (a search such as `identifier=system|value`) makes it a FHIR
        conditional create: a server that supports it returns the match instead of a twin.
        """
        resource_type = check_resource_type(str(resource.get("resourceType", "")))
        url = f"{self.base_url}/{resource_type}"
        headers = {"Content-Type": JSON_TYPES, "Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = await self._send("POST", url, json=resource, headers=headers)
        body = self._json_or_none(response)
        if isinstance(body, dict) and body.get("resourceType") == resource_type and body.get("id"):
            return body
        location = response.headers.get("location") or response.headers.get("content-location")
        if location:
            match = re.search(rf"{resource_type}/([A-Za-z0-9\-.]{{1,64}})", location)
            if match:
                return await self.read(f"{resource_type}/{match.group(1)}")
        raise FhirError(
            f"POST {resource_type}: the server returned neither the resource nor a Location"
        )

    async def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction/batch Bundle to the base; returns the response Bundle."""
        if bundle.get("resourceType") != "Bundle":
            raise ValueError("a transaction must be a Bundle")
        response = await self._send(
            "POST", self.base_url, json=bundle, headers={"Content-Type": JSON_TYPES}
        )
        return self._json_dict(response)

    # --------------------------------------------------------------- plumbing

    async def _pages(
        self,
        url: str,
        params: list[tuple[str, str]],
        *,
        limit: int | None = None,
        max_pages: int | None = None,
        scope: _Scope | None = None,
        state: ReadState,
        max_bytes: int | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's resources, following `link[next]`, until `limit` (at most
        `max_records`) resources or `max_pages` pages; a stop while the server has more is
        recorded in `state` (noted as a partial read unless the caller's own `limit` did it)."""
        page_cap = max_pages or self.max_pages
        cap = min(limit, self.max_records) if limit is not None else self.max_records
        asked = limit is not None and limit < self.max_records  # the caller's own bound
        what = urlsplit(url).path.removeprefix(urlsplit(self.base_url).path).lstrip("/")
        next_url: str | None = url
        query: list[tuple[str, str]] | None = params
        start = state.records
        while next_url:
            bundle = await self._page(next_url, query, scope, max_bytes)
            if bundle.get("resourceType") != "Bundle":
                raise FhirError(
                    f"expected a Bundle from {next_url}, got {bundle.get('resourceType')!r}"
                )
            state.pages += 1
            found = self._entries(bundle, scope)
            next_url = self._next_link(bundle)
            room = cap - (state.records - start)
            more = len(found) > room or (bool(next_url) and len(found) == room)
            found = found[:room]
            state.records += len(found)
            if found:
                yield found
            if more:
                if asked:
                    state.truncated, state.why = True, f"{what}: the first {cap} asked for"
                else:
                    state.stop(
                        f"{what}: stopped at {cap} records (max_records); the server has more"
                    )
                return
            if next_url and state.pages >= page_cap:
                state.stop(
                    f"{what}: stopped after {state.pages} pages (max_pages); the server has more"
                )
                return
            query = None  # the next link carries its own query

    async def _page(
        self,
        url: str,
        query: list[tuple[str, str]] | None,
        scope: _Scope | None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """One page of a search (strict handling asked for) or of `$everything`."""
        if scope is not None and scope.param is None:  # an operation, not a search
            return await self._get_json(url, params=query, max_bytes=max_bytes)
        try:
            return await self._get_json(url, params=query, headers=STRICT, max_bytes=max_bytes)
        except FhirError as exc:
            if exc.status not in (400, 422) or isinstance(exc, FhirUnavailable | FhirAuthError):
                raise
            if scope is not None and scope.param and refuses(str(exc), scope.param):
                raise self._unsupported(
                    scope.resource_type, f"it refused `{scope.param}` under strict handling"
                ) from exc
            if not _REFUSED.search(str(exc)):
                raise
            # Another parameter refused: asked again as before, leniently; a patient-scoped
            # search is still checked record by record.
            log.info("%s refused a search under strict handling (%s); asked leniently", url, exc)
            return await self._get_json(url, params=query, max_bytes=max_bytes)

    def _entries(self, bundle: dict[str, Any], scope: _Scope | None) -> list[dict[str, Any]]:
        """A page's resources (OperationOutcome entries left out), checked against `scope`."""
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
        outcomes = _outcome_texts(entries)
        if scope is not None and scope.param:
            ignored = next((t for t in outcomes if refuses(t, scope.param)), None)
            if ignored is not None:
                raise self._unsupported(scope.resource_type, f"it said: {ignored}")
        if outcomes:
            log.info("%s said: %s", self.base_url, "; ".join(outcomes)[:500])
        resources = [
            e["resource"]
            for e in entries
            if isinstance(e.get("resource"), dict)
            and (e.get("search") or {}).get("mode") != "outcome"
            and e["resource"].get("resourceType") != "OperationOutcome"
        ]
        if scope is None:
            return resources
        return self.compartment.keep(resources, scope.patient_id, scope.via)

    def _next_link(self, bundle: dict[str, Any]) -> str | None:
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
                return self._same_origin(str(link["url"]))
        return None

    def _same_origin(self, url: str) -> str:
        """Resolve a server link against our base, keeping our scheme/host.

        Servers behind proxies often advertise an internal host in their links; sending
        our credentials there would be wrong, so only the path and query are kept.
        """
        base = urlsplit(self.base_url)
        link = urlsplit(url)
        if not link.netloc:  # relative link
            path = link.path if link.path.startswith("/") else f"{base.path}/{link.path}"
            return urlunsplit((base.scheme, base.netloc, path, link.query, ""))
        if (link.scheme, link.netloc) != (base.scheme, base.netloc):
            return urlunsplit((base.scheme, base.netloc, link.path, link.query, ""))
        return url

    async def _get_json(
        self,
        url: str,
        params: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        response = await self._send("GET", url, params=params, headers=headers, max_bytes=max_bytes)
        return self._json_dict(response)

    @staticmethod
    def _json_or_none(response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _json_dict(self, response: httpx.Response) -> dict[str, Any]:
        body = self._json_or_none(response)
        if not isinstance(body, dict):
            raise FhirError(
                f"{response.request.method} {response.request.url}: response is not a JSON object",
                status=response.status_code,
                url=str(response.request.url),
            )
        return body

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> httpx.Response:
        idempotent = method in ("GET", "HEAD")
        attempt = 0
        while True:
            request = self._http.build_request(
                method, url, params=tuple(params or ()) or None, json=json, headers=headers
            )
            try:  # streamed, so a body above the bound is never buffered whole
                response = await self._http.send(request, stream=True)
                await self._read_body(response, max_bytes or self.max_body_bytes)
            except httpx.TransportError as exc:
                # A POST is only safe to repeat when it never reached the server.
                safe = idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt >= self.retries or not safe:
                    raise FhirUnavailable(
                        f"FHIR server at {self.base_url} is unreachable "
                        f"({type(exc).__name__}: {exc or 'no detail'})",
                        url=url,
                    ) from exc
                await self._pause(attempt, None)
                attempt += 1
                continue
            status = response.status_code
            retryable = status in RETRY_STATUS and (idempotent or status in (429, 503))
            wait = retry_after_s(response.headers.get("retry-after"))
            if retryable and attempt < self.retries and (wait or 0) <= self.max_retry_after_s:
                await response.aclose()
                await self._pause(attempt, wait)
                attempt += 1
                continue
            if status >= 400:
                raise self._error(method, url, response, wait)
            return response

    async def _read_body(self, response: httpx.Response, limit: int) -> None:
        """Read the body into `response`, refusing one above `limit` bytes (decoded) without
        reading the rest: a `Content-Length` above it is refused before any byte."""
        declared = response.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        if not too_large:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    too_large = True
                    break
                chunks.append(chunk)
        await response.aclose()
        if too_large:
            request = response.request
            where = str(request.url).removeprefix(self.base_url).lstrip("/") or "[base]"
            raise FhirResponseTooLarge(
                f"FHIR {request.method} {where}: the response is larger than {limit:,} bytes "
                "(the client's bound); it was not read",
                limit=limit,
                status=response.status_code,
                url=str(request.url),
            )
        response._content = b"".join(chunks)  # what `aread` sets; read here with a bound

    def _error(
        self, method: str, url: str, response: httpx.Response, wait: float | None = None
    ) -> FhirError:
        status = response.status_code
        where = url.removeprefix(self.base_url).lstrip("/") or "[base]"
        detail = _diagnostics(response)
        if wait is not None and status in RETRY_STATUS:
            detail = f"{detail}; it asks to retry after {wait:.0f} s".lstrip("; ")
        message = f"FHIR {method} {where} failed: HTTP {status}" + (f": {detail}" if detail else "")
        if status in (404, 410):
            return FhirNotFound(message, status=status, url=url)
        if status in (401, 403):
            return FhirAuthError(message, status=status, url=url)
        if status in UNAVAILABLE_STATUS:
            what = "is rate limiting us" if status == 429 else "is unavailable"
            return FhirUnavailable(
                f"FHIR server at {self.base_url} {what}: HTTP {status}"
                + (f": {detail}" if detail else ""),
                status=status,
                url=url,
            )
        return FhirError(message, status=status, url=url)

    async def _pause(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
        if retry_after is not None:  # the server said when; sooner would be refused again
            delay = retry_after
        if delay > 0:
            await asyncio.sleep(delay)


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
