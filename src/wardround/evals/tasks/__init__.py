"""The eval tasks, each a dataset + solver + scorer: `ehrqa`, `medagentbench` (with its tools
and graders), `agentclinic` (with its actors), `images` and `cds` (guideline-grounded CDS
cards on synthetic charts, `cds_cohort`).

`NAMES` is the one list of them: the suite's registry and the CLI's help read it; a new task
is a module here with a `TASK` and its name added below.
"""

NAMES: tuple[str, ...] = ("ehrqa", "medagentbench", "agentclinic", "images", "cds")
