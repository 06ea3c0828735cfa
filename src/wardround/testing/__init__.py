"""The test and bench harness: a scripted chat model, an OpenAI-compatible chat simulator,
in-process SEKMET and API, the API as a child process, a private Postgres cluster, sample
charts, Medplum and Chroma servers. Imported only by `tests/` and `bench/`."""
