"""Reading a hook's chart by code: the readers live in `wardround.tools.guidelines.chart`
(shared with the `cds` eval task); this module names them for the service's modules."""

from __future__ import annotations

from wardround.tools.guidelines.chart import (
    LOINC,
    Resource,
    Result,
    codes,
    codings,
    is_active,
    latest,
    latest_by_code,
    medicine_name,
    mentions,
    parse_date,
    quantity,
    ref,
    results,
    text_of,
    when,
)

__all__ = [
    "LOINC",
    "Resource",
    "Result",
    "codes",
    "codings",
    "is_active",
    "latest",
    "latest_by_code",
    "medicine_name",
    "mentions",
    "parse_date",
    "quantity",
    "ref",
    "results",
    "text_of",
    "when",
]
