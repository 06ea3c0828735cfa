"""The planner's and answerer's instructions: short, because small models read them too.

Each system prompt is fixed text, sent first, so llama.cpp's prompt cache reuses it across
questions; what changes (options, records, the question) comes last.
"""

from wardround.chart.kinds import KIND_HELP

PLAN_SYSTEM = (
    "You plan how to answer a question about one patient's health record.\n"
    "Reply with a JSON object with two fields.\n"
    '"kind": what the question asks for, one of:\n'
    + "\n".join(f"- {kind.value}: {text}" for kind, text in KIND_HELP.items())
    + '\n"about": which records the question is about, copied exactly from the options. '
    "If no option is what the question names, choose the option that says it is not "
    "recorded; a similar-sounding test is not the same test."
)
PLAN = """Options:
{options}

Question: {question}"""

WHICH_SYSTEM = """You find what a yes-or-no question about one patient's health record asks about.
Reply with a JSON object whose "about" is the option that names it, copied exactly. If no
option is the same thing (a similar-sounding name is not the same thing), choose the option
that says it is not recorded."""
WHICH = """Recorded in the chart:
{options}

Question: {question}"""

CITE_SYSTEM = """You pick the records that answer a question about one patient's health record.
Each record line starts with its reference, then its date.
Reply with a JSON object whose "citations" lists the references of the records that answer
the question, copied exactly; cite only records that hold the answer."""
CITE = """Records ({label}), newest first:
{records}

Question: {question}"""

ANSWER_SYSTEM = """You answer a question about one patient's health record using only the records given.
Each record line starts with its reference, then its date.
Reply with a JSON object whose "answer" is a short answer with the values, units and dates
written exactly as in the records."""
ANSWER = """Patient: {patient}
Records:
{records}

Question: {question}"""

UNSUPPORTED = """These values in your answer are not in the records: {values}.
Answer again using only values and dates written in the records."""

LOOP_SYSTEM = """You answer questions about one patient's health record (patient id {patient_id}).
Use the tools to find the records you need, then give a final answer that cites the
references (like Observation/abc) of the records it rests on. Do not guess values."""
