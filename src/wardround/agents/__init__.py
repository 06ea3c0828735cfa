"""The reasoning side: model presets and backends, the tool-call protocol, prompts, actors."""
