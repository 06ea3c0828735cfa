"""The eval tasks, each a dataset + solver + scorer: `ehrqa`, `medagentbench` (with its tools
and graders), `agentclinic` (with its actors) and `images`."""
