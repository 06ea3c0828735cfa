"""Processes and devices: child-process services (`procs`) and torch device placement (`devices`)."""
