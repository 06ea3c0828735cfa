"""Chart tools at a clinician's level: the planner's computed kinds as tools (tools.py), with
arguments that are enums of what the chart holds (args.py)."""
