"""The copilot: a conversation about one patient's chart, with orders a clinician approves."""

from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.copilot.checkpoint import CheckpointConfigError, open_checkpointer
from wardround.graphs.copilot.events import run_events
from wardround.graphs.copilot.graph import (
    CopilotContext,
    CopilotState,
    build_copilot,
    copilot_graph,
)
from wardround.graphs.copilot.orders import ORDER_SYSTEM, Decision, order_key
from wardround.graphs.copilot.toolset import CopilotTools

__all__ = [
    "ORDER_SYSTEM",
    "AuditLog",
    "CheckpointConfigError",
    "CopilotContext",
    "CopilotState",
    "CopilotTools",
    "Decision",
    "build_copilot",
    "copilot_graph",
    "open_checkpointer",
    "order_key",
    "run_events",
]
