"""The copilot behind the API: threads, runs in the background, one run per thread at a time.

A run (a message, a decision, a retry) is an asyncio task feeding a queue the HTTP response
reads from. The task does not depend on the connection: a clinician who closes the tab in
the middle of an approved order still gets the order written once, and the thread is left
consistent. A second run on a busy thread is refused (409) rather than queued, so a double
click never decides an order twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from wardround.fhir.client import escape_value
from wardround.fhir.errors import FhirError
from wardround.fhir.render import render_resource
from wardround.graphs.copilot.audit import AuditLog
from wardround.graphs.copilot.events import Event, approval_events, event, run_events
from wardround.graphs.copilot.orders import Decision, check_decision
from wardround.graphs.copilot.toolset import CopilotTools
from wardround.graphs.trace import message_record
from wardround.server.chart import (
    NoResults,
    chart_summary,
    patient_record,
    result_trend,
)
from wardround.server.order_preview import order_resource
from wardround.server.schemas import ThreadStatus

log = logging.getLogger(__name__)
RECURSION_LIMIT = 60
_ITEM = re.compile(r"^(?:[A-Z][A-Za-z]+/|image:|guideline:)")


class ApiError(Exception):
    """An error with an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


API_ROLES = {"human": "user", "ai": "assistant"}


def message_json(message: BaseMessage) -> dict[str, Any]:
    """A thread message as the API shows it: the stored shape with chat role names
    ("user", "assistant") and a tool's record ids as `refs`."""
    record = message_record(message)
    record["role"] = API_ROLES.get(record["role"], record["role"])
    record["content"] = str(message.content)
    record.pop("usage", None)
    if isinstance(message, ToolMessage):
        artifact = record.pop("artifact", None)
        record["refs"] = artifact if isinstance(artifact, list) else []
        record["status"] = message.status
    return record


def excerpt(text: str, ref: str) -> str:
    """The lines of a tool result about `ref`: its line and the passage under it."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if ref in line:
            out = [line]
            for more in lines[i + 1 :]:
                if more.startswith("[") or _ITEM.match(more):
                    break
                out.append(more)
            return "\n".join(out).strip()
    return text.strip()


def stopped_turn(state: Any) -> list[BaseMessage]:
    """Messages closing a stopped turn: a result for each tool call that never ran, and
    an answer saying it stopped (so the history stays well formed for the next question)."""
    messages = state.values.get("messages", [])
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    out: list[BaseMessage] = []
    last = messages[-1] if messages else None
    if isinstance(last, AIMessage):
        for call in last.tool_calls:
            if call["id"] not in answered:
                out.append(
                    ToolMessage(
                        "stopped by the clinician before it ran",
                        tool_call_id=call["id"],
                        name=call["name"],
                        status="error",
                        artifact=[],
                    )
                )
    out.append(AIMessage("(stopped by the clinician before answering)"))
    return out


class CopilotService:
    def __init__(self, graph: Any, tools: CopilotTools, audit: AuditLog) -> None:
        self.graph = graph
        self.tools = tools
        self.audit = audit
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stoppable: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def config(thread_id: str, user: str) -> RunnableConfig:
        return {
            "configurable": {"thread_id": thread_id, "user": user},
            "recursion_limit": RECURSION_LIMIT,
        }

    # ------------------------------------------------------------------ reads

    async def snapshot(self, thread_id: str, user: str) -> Any:
        state = await self.graph.aget_state(self.config(thread_id, user))
        if not state.values.get("patient_id"):
            raise ApiError(404, f"no thread {thread_id!r}")
        return state

    @staticmethod
    def status(state: Any) -> ThreadStatus:
        if state.interrupts:
            return "awaiting_approval"
        return "unfinished" if state.next else "idle"

    @staticmethod
    def pending(state: Any) -> list[dict[str, Any]]:
        return [item["data"] for item in approval_events(state.interrupts)]

    async def patient_line(self, patient_id: str, user: str, thread: str | None = None) -> str:
        resource = await self.tools.fhir.read(f"Patient/{patient_id}")
        self.audit.record(
            user=user,
            action="read_patient",
            patient=patient_id,
            resources=[f"Patient/{patient_id}"],
            thread=thread,
        )
        return render_resource(resource)

    async def record(self, thread_id: str, reference: str, user: str) -> dict[str, Any]:
        """A record of the thread's patient: its compact line and its JSON."""
        state = await self.snapshot(thread_id, user)
        return await self.patient_record(state.values["patient_id"], reference, user, thread_id)

    async def patient_record(
        self, patient_id: str, reference: str, user: str, thread: str | None = None
    ) -> dict[str, Any]:
        """One record of the patient (403 for another patient's), its line and its JSON."""
        try:
            resource = await patient_record(self.tools.fhir, patient_id, reference)
        except PermissionError as exc:
            whose = f"{reference} is not a record of this thread's patient"
            raise ApiError(403, whose if thread else str(exc)) from None
        self.audit.record(user=user, action="view_record", patient=patient_id,
                          resources=[reference], thread=thread)  # fmt: skip
        return {"ref": reference, "line": render_resource(resource), "resource": resource}

    async def patients(self, name: str | None, limit: int, user: str) -> list[dict[str, str]]:
        """Patients on the server whose names hold every word of `name`."""
        params: list[tuple[str, str | int]] = [("_count", min(limit, 100))]
        params += [("name", escape_value(word)) for word in (name or "").split()]
        found = await self.tools.fhir.search("Patient", params, limit=limit)
        refs = [f"Patient/{p.get('id')}" for p in found]
        self.audit.record(user=user, action="list_patients", resources=refs)
        return [{"id": str(p.get("id")), "line": render_resource(p)} for p in found]

    async def chart(self, patient_id: str, user: str) -> Any:
        summary = await chart_summary(self.tools.fhir, patient_id)
        self.audit.record(user=user, action="view_chart", patient=patient_id,
                          resources=[f"Patient/{patient_id}"])  # fmt: skip
        return summary

    async def trend(self, patient_id: str, code: str, user: str) -> Any:
        try:
            trend = await result_trend(self.tools.fhir, patient_id, code)
        except NoResults as exc:
            raise ApiError(404, str(exc)) from None
        refs = sorted({p.ref for s in trend.series for p in s.points})
        self.audit.record(user=user, action="view_trend", patient=patient_id, resources=refs)
        return trend

    async def order_preview(self, thread_id: str, call_id: str, user: str) -> dict[str, Any]:
        """The resource the pending order `call_id` would write."""
        state = await self.snapshot(thread_id, user)
        pending = [p for p in self.pending(state) if p.get("call_id") == call_id]
        if not pending:
            raise ApiError(404, f"no order {call_id!r} is waiting for a decision in this thread")
        patient_id = state.values["patient_id"]
        return await order_resource(self.tools.fhir, patient_id, thread_id, pending[0])

    async def evidence(self, thread_id: str, ref: str, user: str) -> dict[str, Any]:
        """What a tool said about a non-FHIR reference (a guideline passage, an image hit)."""
        state = await self.snapshot(thread_id, user)
        for message in reversed(state.values.get("messages", [])):
            if isinstance(message, ToolMessage) and ref in (message.artifact or []):
                return {
                    "ref": ref,
                    "line": excerpt(str(message.content), ref),
                    "source": message.name,
                }
        raise ApiError(404, f"{ref} was not retrieved in this thread")

    # ----------------------------------------------------------------- writes

    async def create_thread(self, patient_id: str, user: str) -> dict[str, Any]:
        thread_id = uuid.uuid4().hex
        line = await self.patient_line(patient_id, user, thread_id)
        await self.graph.aupdate_state(
            self.config(thread_id, user),
            {"patient_id": patient_id, "patient": line},
            as_node="finish",
        )
        return {"thread_id": thread_id, "patient_id": patient_id, "patient": line}

    async def post_message(self, thread_id: str, text: str, user: str) -> asyncio.Queue:
        release = self._claim(thread_id)
        try:
            state = await self.snapshot(thread_id, user)
            if state.interrupts:
                raise ApiError(
                    409,
                    "an order is waiting for a decision: approve, edit or reject it first "
                    f"(GET /api/threads/{thread_id}/approvals)",
                )
            if state.next:
                raise ApiError(
                    409,
                    "the last run of this thread did not finish: "
                    f"POST /api/threads/{thread_id}/resume to finish it",
                )
            payload = {"messages": [HumanMessage(text)]}
            return self._start(thread_id, payload, user, release, stoppable=True)
        except BaseException:
            release()
            raise

    async def decide(
        self, thread_id: str, call_id: str, decision: Decision, user: str
    ) -> asyncio.Queue:
        release = self._claim(thread_id)
        try:
            state = await self.snapshot(thread_id, user)
            match = [
                i
                for i in state.interrupts
                if isinstance(i.value, dict) and i.value.get("call_id") == call_id
            ]
            if not match:
                raise ApiError(
                    409, f"no order {call_id!r} is waiting for a decision in this thread"
                )
            pending = match[0]
            tools = self.tools.by_name(state.values["patient_id"])
            tool = tools.get(pending.value.get("tool", ""))
            if tool is None:
                raise ApiError(
                    409, f"the order's tool {pending.value.get('tool')!r} is not available"
                )
            try:
                checked = check_decision(decision.model_dump(), tool)
            except ValueError as exc:
                raise ApiError(422, str(exc)) from None
            command: Command[Any] = Command(resume={pending.id: checked.model_dump(mode="json")})
            return self._start(thread_id, command, user, release)
        except BaseException:
            release()
            raise

    async def resume(self, thread_id: str, user: str) -> asyncio.Queue:
        release = self._claim(thread_id)
        try:
            state = await self.snapshot(thread_id, user)
            if state.interrupts or not state.next:
                raise ApiError(409, "nothing to resume: the thread's last run finished")
            return self._start(thread_id, None, user, release)
        except BaseException:
            release()
            raise

    async def stop(self, thread_id: str, user: str) -> dict[str, Any]:
        """Cancel the answer being written and close the turn, so the next question can go.

        Only runs started by a message stop: a run after an approval may be writing the
        order, and it must finish.
        """
        await self.snapshot(thread_id, user)
        task = self._stoppable.get(thread_id)
        if task is None or task.done():
            raise ApiError(409, "nothing to stop: no question is being answered in this thread")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        release = self._claim(thread_id)
        try:
            state = await self.snapshot(thread_id, user)
            if state.next and not state.interrupts:
                await self.graph.aupdate_state(
                    self.config(thread_id, user),
                    {"messages": stopped_turn(state)},
                    as_node="finish",
                )
        finally:
            release()
        self.audit.record(user=user, action="stop_run", thread=thread_id)
        return {"thread_id": thread_id, "status": "stopped"}

    # --------------------------------------------------------------- plumbing

    def _claim(self, thread_id: str) -> Callable[[], None]:
        """Mark the thread busy; the returned function frees it (the run's task calls it)."""
        if thread_id in self._busy:
            raise ApiError(409, "this thread is busy with another request; try again when it ends")
        self._busy.add(thread_id)  # one event loop: check and add cannot interleave
        return lambda: self._busy.discard(thread_id)

    def _start(
        self,
        thread_id: str,
        payload: Any,
        user: str,
        release: Callable[[], None],
        stoppable: bool = False,
    ) -> asyncio.Queue:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        config = self.config(thread_id, user)

        async def run() -> None:
            try:
                async for item in run_events(self.graph, payload, config):
                    await queue.put(item)
            except FhirError as exc:
                await queue.put(event("error", message=f"FHIR server error: {exc}"))
                await queue.put(event("done", status="error"))
            except Exception as exc:
                log.exception("copilot run failed (thread %s)", thread_id)
                await queue.put(
                    event("error", message=f"the run failed: {type(exc).__name__}: {exc}")
                )
                await queue.put(event("done", status="error"))
            except asyncio.CancelledError:  # stop(): tell the client, then end
                queue.put_nowait(event("done", status="stopped"))
                raise
            finally:
                release()
                queue.put_nowait(None)

        task = asyncio.create_task(run(), name=f"copilot-{thread_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if stoppable:
            self._stoppable[thread_id] = task
            task.add_done_callback(lambda t: self._forget(thread_id, t))
        return queue

    def _forget(self, thread_id: str, task: asyncio.Task[None]) -> None:
        if self._stoppable.get(thread_id) is task:  # not a newer run of the same thread
            del self._stoppable[thread_id]

    async def drain(self) -> None:
        """Wait for runs still going (at shutdown, so approved orders finish writing)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def events_of(queue: asyncio.Queue) -> AsyncIterator[Event]:
    while (item := await queue.get()) is not None:
        yield item
