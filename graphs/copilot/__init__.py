"""The copilot: a conversation about one patient's chart, with orders a clinician approves."""

from .audit import AuditLog
from .checkpoint import CheckpointConfigError, open_checkpointer
from .events import run_events
from .graph import CopilotContext, CopilotState, build_copilot, copilot_graph
from .orders import ORDER_SYSTEM, Decision, order_key
from .toolset import CopilotTools

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
