"""MedAgentBench as the original runs it (`-o mode=official`).

The 300 tasks of `test_data_v2.json`, unchanged, against a FHIR server that holds the
benchmark's patients (the benchmark's public container image; pass its base URL with
`-o fhir_url=...` or WARDROUND_FHIR_BASE_URL). Two protocols (`-o protocol=`):

- `original` (default): the original text protocol (`text_protocol.py`): the model replies
  `GET url`, `POST url` + a JSON body, or `FINISH([answers])`, for at most 8 rounds, after a
  system prompt that lists the functions of `funcs_v1.json`.
- `tools`: our tool protocol with the nine function tools of `mab_tools.py`.

Each answer is computed from the server at grading time, as the original's reference
solutions do (`references.py`), and judged by the shared graders of `mab_grading.py`.
`seed.py` makes synthetic patients that carry the task file's MRNs, for tests and for
trying the mode without the container: only the real data gives numbers comparable with
the paper.
"""

from wardround.evals.tasks.mab_official.task import bind, dataset

__all__ = ["bind", "dataset"]
