"""What can go wrong talking to a FHIR server, as exceptions callers can tell apart."""

from __future__ import annotations


class FhirError(Exception):
    """A FHIR request failed; `status` is the HTTP status (None when no response came back)."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.status = status
        self.url = url


class FhirUnavailable(FhirError):
    """The server could not be reached or kept failing (connection refused, timeouts, 502-504)."""


class FhirNotFound(FhirError):
    """The resource or patient does not exist (404/410)."""


class FhirAuthError(FhirError):
    """Authentication failed: the token endpoint refused us, or the server answered 401/403."""


class FhirUnsupportedSearch(FhirError):
    """The server cannot search this resource type by patient (no `patient` or `subject`
    search parameter, or it said it ignored the one sent), so the type is left out: a search
    it ignores returns every patient's records."""

    def __init__(self, message: str, *, resource_type: str, url: str | None = None):
        super().__init__(message, url=url)
        self.resource_type = resource_type


class FhirForeignRecord(FhirError):
    """A read made for one patient returned a record of another (dropped and reported)."""


class FhirResponseTooLarge(FhirError):
    """A response body was larger than the client accepts (`max_body_bytes`); it was not
    read to the end. `limit` is the bound in bytes."""

    def __init__(
        self, message: str, *, limit: int, status: int | None = None, url: str | None = None
    ):
        super().__init__(message, status=status, url=url)
        self.limit = limit
