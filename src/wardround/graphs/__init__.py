"""LangGraph state machines: EHR question answering, the tool loop, the clinic, the copilot."""
