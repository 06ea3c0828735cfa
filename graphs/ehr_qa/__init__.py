"""EHR question answering: a question about one patient in, an answer citing records out."""

from .answer import QAResult, answer_question

__all__ = ["QAResult", "answer_question"]
