"""`wardround ask "QUESTION" --patient ID`: one question about one patient, answered with citations."""

from __future__ import annotations

import asyncio
import json
from typing import get_args

import typer

from wardround.agents.gguf import ModelFileError
from wardround.agents.protocol import ModelUnavailable
from wardround.cli.common import clean_errors, console, fail, load_settings
from wardround.fhir.errors import FhirError
from wardround.graphs.ehr_qa import QAResult
from wardround.graphs.ehr_qa.answer import GraphName
from wardround.graphs.tool_loop import Choice
from wardround.runtime.procs import ServiceError
from wardround.settings import Settings

GRAPHS: tuple[GraphName, ...] = get_args(GraphName)
CHOICES: tuple[Choice, ...] = get_args(Choice)


def ask(
    question: str = typer.Argument(..., help="the question about the patient"),
    patient: str = typer.Option(..., "--patient", "-p", help="FHIR Patient id"),
    model: str | None = typer.Option(None, help="model preset (default: WARDROUND_MODEL)"),
    base_url: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint (with --model-name)"
    ),
    model_name: str | None = typer.Option(None, help="model name at --base-url"),
    graph: str = typer.Option("planner", help="planner (fixed pipeline) or loop (free tool loop)"),
    choice: str = typer.Option(
        "two_step", help="the loop's step choice: two_step (action, then its arguments) or one_call"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Answer a question about one patient from their FHIR record, citing the records used."""
    if graph not in GRAPHS:
        fail(f"unknown graph {graph!r}: use planner or loop")
    if choice not in CHOICES:
        fail(f"unknown choice {choice!r}: use two_step or one_call")
    if not question.strip():
        fail("the question is empty: ask something about the patient")
    settings = load_settings(model=model, model_base_url=base_url, model_name=model_name)
    expected = (FhirError, ServiceError, ModelUnavailable, ModelFileError, ValueError, OSError)
    with clean_errors(*expected, RuntimeError):
        result = asyncio.run(_ask(settings, question, patient, graph, choice))
    if result.error:
        fail(result.error)
    if as_json:
        typer.echo(json.dumps(result.public()))
        return
    console.print(f"[bold]{result.answer}[/]", highlight=False)
    for ref in result.citations:
        console.print(f"  [cyan]↳ {ref}[/]", highlight=False)
    console.print(f"[dim]{_how_checked(result)}[/]", highlight=False)
    if result.flagged_citations:
        console.print(
            f"  [yellow]dropped citations not retrieved: {', '.join(result.flagged_citations)}[/]"
        )
    console.print(
        f"[dim]{result.steps} model steps, {result.tokens['prompt']}+{result.tokens['completion']} tokens, "
        f"{result.latency_s:.1f} s[/]"
    )


def _how_checked(result: QAResult) -> str:
    """One line saying how the answer was reached and checked."""
    plan = f"plan: {result.plan}; " if result.plan else ""
    if result.computed:
        how = f"computed by code from {len(result.citations)} cited record(s)"
    elif result.supported:
        how = "every number and date in the answer is in the cited records"
    else:
        how = f"NOT supported by its citations: {', '.join(result.unsupported) or 'no citations'}"
    return plan + how


async def _ask(
    settings: Settings, question: str, patient: str, graph: GraphName, choice: Choice
) -> QAResult:
    from wardround.agents.embedded import ensure_model_server
    from wardround.agents.models import make_chat_model
    from wardround.fhir.client import FhirClient
    from wardround.graphs.ehr_qa import answer_question

    ensure_model_server(settings)
    chat = make_chat_model(settings)
    async with FhirClient.from_settings(settings) as fhir:
        return await answer_question(
            question,
            patient,
            model=chat,
            fhir=fhir,
            graph=graph,
            choice=choice,
        )
