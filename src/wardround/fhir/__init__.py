"""FHIR R4 for agents: a client for any server, compact rendering, the patient manifest.

- `client.FhirClient`: async search/read/$everything/create with paging, retries, auth.
- `auth`: none, bearer, SMART Backend Services (`auth_from_settings`).
- `render.render_resource`: one line per resource, what a model reads instead of JSON.
- `manifest.Manifest` / `build_manifest`: which types and codes a chart holds.
- `records.fetch_records`: one patient's records by type, code, text, status, dates.

The LangChain tools built on these live in `wardround.tools.fhir`.
"""
