"""Short versions of the fault drills (bench/drills.py runs the long ones): real SEKMET, real
eval, API and CLI processes; a stand-in model where the model is not what is tested."""

from __future__ import annotations

import pytest

from bench import drills

pytestmark = pytest.mark.integration


def clean(outcome: drills.Outcome) -> None:
    assert outcome.trials > 0, outcome
    assert (outcome.lost, outcome.repeated, outcome.tracebacks) == (0, 0, 0), outcome
    assert outcome.differ == 0, outcome.notes
    assert not [n for n in outcome.notes if "differ" in n or "without" in n], outcome.notes


def test_fhir_killed_mid_eval_then_retry_errors() -> None:
    # Every sample's final score (verdict, value, answer) is compared with a clean run's.
    outcome = drills.drill_service_killed("fhir", trials=1, limit=6)
    clean(outcome)
    assert outcome.errors > 0, "the samples in flight were recorded as errors"
    assert any("FHIR server" in n for n in outcome.notes)
    assert any(n.startswith("clean run:") for n in outcome.notes), outcome.notes


def test_eval_sigkilled_keeps_its_results_file_whole() -> None:
    # 3 kills on 8 samples: a round close to complete is finished and a fresh one started.
    outcome = drills.drill_eval_sigkill(trials=3, limit=8)
    clean(outcome)
    assert outcome.trials == 3, outcome.notes
    assert outcome.errors == 0, outcome.notes
    assert any("corrupt results files after a kill: 0" in n for n in outcome.notes)


def test_api_killed_with_an_order_pending() -> None:
    outcome = drills.drill_api_killed(trials=2)
    clean(outcome)


def test_fhir_bursts_give_answers_or_clear_errors() -> None:
    outcome = drills.drill_bursts(reads=16, asks=0, conversations=3)
    clean(outcome)
    assert any("sooner than Retry-After: 0" in n for n in outcome.notes), outcome.notes


# The busy llama.cpp drill runs in bench/drills.py only: tests/unit/test_procs.py holds a
# real busy service while a second client starts.
