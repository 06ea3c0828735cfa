"""wardround.evals: agentic clinical tasks, a concurrent resumable runner, paired comparison.

A task is a dataset of `Sample`s, a solver (one of our graphs with the model under test)
and a scorer; `runner.run_task` runs it, `suite.run_eval` / `suite.compare_eval` are what the
CLI calls. See docs/evaluation.md.
"""

from wardround.evals.task import EvalEnv, Sample, Score, Task, TaskDef, Trace

__all__ = ["EvalEnv", "Sample", "Score", "Task", "TaskDef", "Trace"]
