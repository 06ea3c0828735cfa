"""EHR question answering: a question about one patient in, an answer citing records out."""

from wardround.graphs.ehr_qa.answer import QAResult, answer_question

__all__ = ["QAResult", "answer_question"]
