"""Chart arithmetic a clinician does by eye, done by code: the newest value, a value on a
day, the extremes and counts in a window, current lists, ever/first, age, the last visit;
and the checks on answers (is every number in the records?).

Model-free and graph-free: the EHR QA planner (graphs/) and the chart tools (tools/) both
compute through these modules, so a planner answer and a tool result agree.
"""
