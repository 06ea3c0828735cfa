// The copilot page: the chart at a glance beside the conversation. Pick a patient, read the
// chart (no model involved), plot a result's history, ask, follow citations into the chart,
// decide proposed orders. Plain browser JavaScript against the /api endpoints; replies are
// server-sent events read from a fetch() stream (EventSource cannot POST).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  thread: null, patient: null, chart: null, bubble: null, busy: false,
  stoppable: false, cards: {}, trendCode: null, plotted: null, afterRun: [], stopping: null,
};

function el(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  if (text !== null) node.textContent = text;
  return node;
}

function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const token = localStorage.getItem("wardround-token");
  if (token) h["Authorization"] = "Bearer " + token;
  const user = $("user").value.trim();
  if (user) h["X-Wardround-User"] = user;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.body !== undefined) });
  if (response.status === 401) {
    $("token-box").hidden = false;
    $("token").focus();
    throw new Error("the API needs a token: enter it at the top right");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();
const threadPath = (rest = "") => "/api/threads/" + encodeURIComponent(state.thread) + rest;
const patientPath = (rest = "") => "/api/patients/" + encodeURIComponent(state.patient) + rest;

function setStatus(text) { $("status").textContent = text; }

function setBusy(busy, stoppable = false) {
  state.busy = busy;
  state.stoppable = busy && stoppable;
  const ready = !!state.patient;
  $("send").disabled = busy || !ready;
  $("message").disabled = busy || !ready;
  $("progress").hidden = !busy;
  $("stop").hidden = !state.stoppable;
  for (const b of document.querySelectorAll(".approval-card:not(.decided) button")) b.disabled = busy;
}

function add(kind, text) {
  const div = el("div", { class: "msg " + kind }, text);
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function showView(view) {
  document.querySelector("main").dataset.view = view;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.view === view);
  if (view === "chart") redrawTrend();  // its width may have changed while hidden
}

// ---------------------------------------------------------------- patients

async function loadPatients() {
  const name = $("patient-filter").value.trim();
  const query = name ? "?name=" + encodeURIComponent(name) : "";
  try {
    const patients = await getJson("/api/patients" + query);
    const select = $("patient-select");
    select.replaceChildren(el("option", { value: "" }, patients.length ? "choose a patient…" : "no patients found"));
    for (const p of patients) {
      const option = el("option", { value: p.id, title: p.line }, p.line.replace(/^Patient\/\S+\s*/, ""));
      select.appendChild(option);
    }
    if (state.patient) select.value = state.patient;
  } catch (err) {
    setStatus(err.message);
  }
}

async function choosePatient(patientId) {
  if (!patientId || patientId === state.patient) return;
  state.patient = patientId;
  state.thread = null;
  $("patient-select").value = patientId;
  $("start").disabled = false;
  $("log").replaceChildren();
  $("thread-id").textContent = "";
  history.replaceState(null, "", location.pathname);
  setBusy(false);
  await loadChart();
  if (!state.thread && state.chart) showIntro();
}

function showIntro() {
  $("log").replaceChildren(el("div", { class: "intro muted" },
    `Ask about ${state.chart.patient.name}'s chart: the agent reads the records and cites them; ` +
    "a citation shows where it points in the chart. Orders it proposes wait for your approval."));
}

async function startThread() {
  if (!state.patient) return null;
  try {
    const thread = await (await api("/api/threads", { method: "POST", body: JSON.stringify({ patient_id: state.patient }) })).json();
    openThread(thread.thread_id);
    $("log").replaceChildren();
    add("tool", "New conversation about " + (state.chart ? state.chart.patient.name : thread.patient));
    $("message").focus();
    return thread.thread_id;
  } catch (err) {
    setStatus(err.message);
    return null;
  }
}

function openThread(threadId) {
  state.thread = threadId;
  state.cards = {};
  $("thread-id").textContent = "conversation " + threadId;
  location.hash = "thread=" + threadId;
  setBusy(false);
}

async function restoreThread(threadId) {
  try {
    const view = await getJson("/api/threads/" + encodeURIComponent(threadId));
    state.patient = view.patient_id;
    $("patient-select").value = view.patient_id;
    $("start").disabled = false;
    openThread(view.thread_id);
    loadChart();
    for (const m of view.messages) {
      if (m.role === "user") add("user", m.content);
      else if (m.role === "assistant" && !m.tool_calls) showAnswer(add("assistant", m.content), m);
      else if (m.role === "assistant") for (const c of m.tool_calls) add("tool", "→ " + c.name + " " + JSON.stringify(c.args));
      else if (m.role === "tool") showToolResult({ id: m.tool_call_id, name: m.name, refs: m.refs || [], text: m.content, status: m.status });
    }
    for (const p of view.pending) showApproval(p);
  } catch (err) {
    setStatus(err.message);
  }
}

// ------------------------------------------------------------------- chart

async function loadChart() {
  const patientId = state.patient;
  $("chart-empty").hidden = false;
  $("chart-empty").textContent = "Loading the chart…";
  $("chart-body").hidden = true;
  try {
    const chart = await getJson(patientPath("/chart"));
    if (patientId !== state.patient) return;  // another patient was chosen meanwhile
    state.chart = chart;
    renderChart(chart);
  } catch (err) {
    $("chart-empty").textContent = "The chart could not be loaded: " + err.message;
  }
}

function renderChart(chart) {
  const p = chart.patient;
  const facts = [p.sex, p.age !== null ? p.age + " y" : null, p.birth_date ? "born " + p.birth_date : null].filter(Boolean);
  const head = el("div", { class: "patient-head" });
  const name = el("a", { href: "#", class: "patient-name", "data-ref": p.ref }, p.name);
  name.addEventListener("click", (e) => { e.preventDefault(); showRecord(p.ref, "chart"); });
  head.append(name, el("span", { class: "facts" }, facts.join(" · ")));
  if (p.deceased) head.append(el("span", { class: "deceased" }, p.deceased === "yes" ? "deceased" : "died " + p.deceased));
  $("chart-header").replaceChildren(head);

  const disorders = chart.problems.filter((i) => i.kind === "disorder");
  const findings = chart.problems.filter((i) => i.kind !== "disorder");
  const sections = [
    ["problems", "Active problems", disorders, findings.length ? "no active disorder" : "none recorded"],
    ["medications", "Current medications", chart.medications, "none active"],
    ["allergies", "Allergies", chart.allergies, "none recorded"],
    ["vitals", "Latest vital signs", chart.vitals, "none recorded"],
    ["labs", "Latest labs", chart.labs, "none of the common labs"],
  ];
  const box = $("chart-sections");
  box.replaceChildren();
  for (const [key, title, items, empty] of sections) {
    box.append(section(key, title, items, empty));
    if (key === "problems" && findings.length) box.append(folded("findings", "Active findings and situations", findings));
  }
  if (chart.other_results.length) box.append(folded("other", "Other results, latest of each", chart.other_results));
  $("chart-note").textContent = `From ${chart.records} records on the FHIR server, no model involved. ` +
    "Flags marked * use a typical adult range: the record carries none.";
  $("chart-empty").hidden = true;
  $("chart-body").hidden = false;
}

function section(key, title, items, empty) {
  const box = el("section", { class: "chart-section", id: "section-" + key });
  box.append(el("h3", {}, title + (items.length ? ` (${items.length})` : "")));
  box.append(items.length ? itemList(items, key) : el("p", { class: "muted empty" }, empty));
  return box;
}

function folded(key, title, items) {
  const box = el("details", { class: "chart-section folded", id: "section-" + key });
  box.append(el("summary", {}, `${title} (${items.length})`), itemList(items, key));
  return box;
}

function itemList(items, key) {
  const list = el("ul", { class: "items items-" + key });
  for (const item of items) list.append(chartItem(item));
  return list;
}

function chartItem(item) {
  const li = el("li", { class: "item" + (item.kind && item.kind !== "disorder" ? " minor" : ""), "data-ref": item.ref, title: item.line });
  if (item.code) li.dataset.code = item.code;
  const label = el("a", { href: "#", class: "label" }, item.label);
  label.addEventListener("click", (e) => { e.preventDefault(); showRecord(item.ref, "chart"); });
  li.append(label);
  if (item.value) {
    const value = el(item.numeric ? "button" : "span", { class: "value" + (item.flag ? " flag-" + item.flag : ""), type: "button" }, readableUnits(item.value));
    if (item.numeric) {
      value.title = "plot every result of " + item.label;
      value.addEventListener("click", () => openTrend(item.code, item.label));
    }
    li.append(value);
    if (item.flag) li.append(el("span", { class: "flag flag-" + item.flag, title: flagTitle(item) }, item.flag + (item.flag_source === "typical" ? "*" : "")));
  }
  if (item.date) li.append(el("time", { class: "date", dateTime: item.date }, item.date));
  if (item.numeric) {
    const plot = el("button", { class: "trend-button", type: "button", title: "plot the history", "aria-label": "plot " + item.label }, "");
    plot.innerHTML = '<svg viewBox="0 0 16 12" width="16" height="12" aria-hidden="true"><path d="M1 10 L5 6 L8 8 L15 2" fill="none" stroke="currentColor" stroke-width="1.6"/></svg>';
    plot.addEventListener("click", () => openTrend(item.code, item.label));
    li.append(plot);
  }
  return li;
}

// UCUM codes as a reader writes them (the record panel keeps the exact line).
function readableUnits(text) {
  return text.replace(/mm\[Hg\]/g, "mmHg").replace(/ Cel\b/g, " °C").replace(/ \{score\}/g, "")
    .replace(/\{([^}]*)\}/g, "$1");
}

function flagTitle(item) {
  const word = { H: "high", L: "low", A: "abnormal" }[item.flag];
  return item.flag_source === "typical" ? `${word} against a typical adult range (the record has none)` : `${word} (from the record)`;
}

// ------------------------------------------------------------------ trends

async function openTrend(code, label, highlightRef = null) {
  if (!code) return;
  try {
    const trend = await getJson(patientPath("/trend?code=" + encodeURIComponent(code)));
    state.trendCode = code;
    $("trend").hidden = false;
    $("trend").dataset.code = code;
    $("trend-title").textContent = `${label || trend.label}: ${trend.records} result${trend.records === 1 ? "" : "s"}`;
    state.plotted = { trend, highlightRef };
    redrawTrend();
    $("trend-legend").replaceChildren(...trendLegend(trend).map((entry) => {
      const row = el("div", { class: "legend-row" });
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = entry.color;
      row.append(swatch, document.createTextNode(entry.text));
      return row;
    }));
    $("trend").scrollIntoView({ block: "nearest" });
    showView("chart");
  } catch (err) {
    setStatus("no plot: " + err.message);
  }
}

function redrawTrend() {
  if (!state.plotted || $("trend").hidden) return;
  drawTrend($("trend-plot"), state.plotted.trend, (ref) => showRecord(ref, "chart"), state.plotted.highlightRef);
}

// ----------------------------------------------------------------- records

// Open a record in the side panel; `scope` "chart" reads it through the patient, a
// citation through the thread (non-FHIR evidence has only the thread route).
async function showRecord(ref, scope = "thread") {
  const fhir = /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]+$/.test(ref);
  let path;
  if (fhir && (scope === "chart" || !state.thread)) path = patientPath("/records/" + ref);
  else path = threadPath(fhir ? "/records/" + ref : "/evidence?ref=" + encodeURIComponent(ref));
  try {
    const record = await getJson(path);
    $("record-ref").textContent = record.ref;
    $("record-line").textContent = record.line;
    $("record-json").textContent = record.resource ? JSON.stringify(record.resource, null, 2) : (record.source ? "found by " + record.source : "");
    $("record-panel").hidden = false;
    return record;
  } catch (err) {
    setStatus(err.message);
    return null;
  }
}

function codeOf(resource) {
  const codings = ((resource || {}).code || {}).coding || [];
  const c = codings.find((x) => x.system === "http://loinc.org") || codings[0];
  return c && c.code ? (c.system ? c.system + "|" + c.code : c.code) : null;
}

// A citation: mark the chart items it points at (the record itself, or the chart's latest
// record of the same code), open the record, and plot its history when it is a result.
async function followCitation(ref) {
  for (const node of document.querySelectorAll(".item.cited")) node.classList.remove("cited");
  const record = await showRecord(ref, "thread");
  const esc = (s) => s.replace(/["\\]/g, "\\$&");
  let hits = [...document.querySelectorAll(`.item[data-ref="${esc(ref)}"]`)];
  const code = record && record.resource ? codeOf(record.resource) : null;
  if (!hits.length && code) hits = [...document.querySelectorAll(`.item[data-code="${esc(code)}"]`)];
  for (const node of hits) node.classList.add("cited");
  if (hits.length) hits[0].scrollIntoView({ block: "nearest" });
  if (record && record.resource && record.resource.resourceType === "Observation" && code && hits.some((n) => n.querySelector(".trend-button"))) {
    await openTrend(code, null, ref);
  }
}

// --------------------------------------------------------------- streaming

async function stream(path, body, stoppable) {
  setBusy(true, stoppable);
  setProgress(stoppable ? "Planning…" : "Working…");
  setStatus("");
  state.bubble = null;
  try {
    const response = await api(path, { method: "POST", body: JSON.stringify(body) });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (err) {
    add("error", err.message);
  } finally {
    // A stopped run's stream ends before the server has closed the turn: wait for that,
    // or the next question would find the thread still busy.
    if (state.stopping) await state.stopping;
    state.stopping = null;
    setBusy(false);
    for (const job of state.afterRun.splice(0)) job();
  }
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;  // a keep-alive comment
  const handler = handlers[name];
  if (handler) handler(JSON.parse(data.join("\n")));
}

function setProgress(text) { $("progress-text").textContent = text; }

function bubble() {
  if (!state.bubble) state.bubble = add("assistant", "");
  return state.bubble;
}

const STEP_TEXT = {
  patient_manifest: () => "Reading what the chart holds",
  search_records: (a) => `Reading ${a.resource_type || ""} records`.replace("  ", " "),
  read_record: (a) => "Reading " + (a.reference || "a record"),
  search_images: () => "Searching images",
  lookup_guideline: () => "Looking up guidelines",
  answer_from_chart: () => "Answering from the chart",
};

const handlers = {
  token(d) {
    setProgress("Answering…");
    const b = bubble();
    if (d.reset) b.textContent = "";
    b.textContent += d.text;
  },
  tool_call(d) {
    const step = STEP_TEXT[d.name];
    setProgress((step ? step(d.args || {}) : d.name.startsWith("create_") ? "Preparing an order" : d.name) + "…");
    add("tool", "→ " + d.name + " " + JSON.stringify(d.args));
  },
  tool_result(d) { setProgress("Planning the next step…"); showToolResult(d); },
  approval_required(d) { state.bubble = null; showApproval(d); },
  answer(d) { showAnswer(bubble(), d); state.bubble = null; },
  error(d) { add("error", d.message); },
  done(d) {
    const text = { awaiting_approval: "an order is waiting for your decision", error: "the run ended with an error", stopped: "stopped" }[d.status];
    setStatus(text || "");
    if (d.status === "stopped") add("tool", "■ stopped");
  },
};

function showToolResult(d) {
  const summary = d.refs.length ? d.refs.length + " record(s)" : (d.text || "").split("\n")[0];
  const div = add("tool", "← " + d.name + ": " + summary);
  div.title = d.text || "";
  const card = state.cards[d.id];
  if (card && d.name.startsWith("create_")) showWritten(card, d);
}

// An answer with its citations, and what the checks said: citations dropped because the
// conversation never retrieved them, and (when present) whether its numbers are supported.
function showAnswer(div, d) {
  div.textContent = d.text !== undefined ? d.text : d.content;
  const citations = d.citations || [];
  if (d.supported === true || d.supported === false) {
    div.append(el("div", { class: "check " + (d.supported ? "supported" : "unsupported") },
      d.supported ? "✓ its numbers are in the cited records" : "⚠ not supported: its numbers are not in the cited records"));
  }
  if (d.plan) div.append(el("div", { class: "plan" }, "plan: " + d.plan));
  if (d.injection_warning) div.append(el("div", { class: "check unsupported" }, "⚠ a cited record holds text addressed to an AI: it is quoted, not followed"));
  if ((d.flagged || []).length) {
    div.append(el("div", { class: "check unsupported" }, `⚠ ${d.flagged.length} citation(s) removed: not read in this conversation (${d.flagged.join(", ")})`));
  }
  if (!citations.length) return;
  const box = el("div", { class: "citations" });
  for (const ref of citations) {
    const chip = el("button", { class: "citation", type: "button", title: "show it in the chart and open the record" }, ref);
    chip.addEventListener("click", () => followCitation(ref));
    box.appendChild(chip);
  }
  div.appendChild(box);
}

async function send() {
  const text = $("message").value.trim();
  if (!text || state.busy || !state.patient) return;
  if (!state.thread && !(await startThread())) return;
  $("message").value = "";
  add("user", text);
  showView("chat");
  await stream(threadPath("/messages"), { content: text }, true);
}

function stop() {
  if (!state.thread || !state.stoppable || state.stopping) return;
  setProgress("Stopping…");
  state.stopping = api(threadPath("/stop"), { method: "POST" }).catch((err) => setStatus(err.message));
}

// --------------------------------------------------------------- approvals

function showApproval(p) {
  const card = el("div", { class: "approval-card", "data-call-id": p.call_id });
  state.cards[p.call_id] = card;
  const args = el("textarea", { rows: 5, value: JSON.stringify(p.args, null, 2) });
  args.setAttribute("aria-label", "order arguments");
  const preview = el("pre", { class: "order-resource" }, "building the resource…");
  const reason = el("input", { placeholder: "reason (for reject)", maxLength: 500 });
  const approve = button("Approve", "approve"), edit = button("Approve as edited", "edit"), reject = button("Reject", "reject");
  const actions = el("div", { class: "actions" });
  actions.append(approve, edit, reason, reject);
  const details = el("details", { class: "order-args" });
  details.append(el("summary", {}, "Edit the arguments"), args);
  card.append(el("h3", {}, "Proposed order: needs your approval"), el("p", { class: "summary" }, p.summary),
    el("div", { class: "muted" }, `Will write this ${p.resource_type || "resource"} (times are set when it is written):`), preview, details, actions);
  if (p.error) card.append(el("p", { class: "problem" }, p.error));
  $("log").appendChild(card);
  card.scrollIntoView({ block: "end" });
  // The order is pending once the run has stopped at it: ask after the stream ends.
  const load = () => getJson(threadPath("/approvals/" + encodeURIComponent(p.call_id) + "/resource"))
    .then((resource) => { preview.textContent = JSON.stringify(resource, null, 2); })
    .catch((err) => { preview.textContent = "could not build it: " + err.message; });
  if (state.busy) state.afterRun.push(load); else load();

  const decide = async (decision) => {
    card.classList.add("decided");
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    card.append(el("p", { class: "outcome" }, { approve: "Approved", edit: "Approved as edited", reject: "Rejected" }[decision.action]));
    await stream(threadPath("/approvals/" + encodeURIComponent(p.call_id)), decision, false);
  };
  approve.addEventListener("click", () => decide({ action: "approve" }));
  reject.addEventListener("click", () => decide({ action: "reject", reason: reason.value.trim() || null }));
  edit.addEventListener("click", () => {
    let edited;
    try { edited = JSON.parse(args.value); } catch (err) { setStatus("the arguments are not valid JSON: " + err.message); return; }
    decide({ action: "edit", args: edited });
  });
}

function showWritten(card, d) {
  const ok = d.status !== "error" && d.refs.length;
  const line = el("p", { class: ok ? "written" : "problem" }, ok ? "Written: " : "Not written: " + (d.text || "").split("\n")[0]);
  for (const ref of ok ? d.refs : []) {
    const link = el("a", { href: "#", class: "written-ref", "data-ref": ref }, ref);
    link.addEventListener("click", (e) => { e.preventDefault(); showRecord(ref, "thread"); });
    line.append(link);
  }
  card.append(line);
}

function button(text, cls) {
  return el("button", { type: "button", class: cls }, text);
}

// -------------------------------------------------------------------- wiring

$("user").value = localStorage.getItem("wardround-user") || "";
$("user").addEventListener("change", () => localStorage.setItem("wardround-user", $("user").value.trim()));
$("token").addEventListener("change", () => {
  localStorage.setItem("wardround-token", $("token").value.trim());
  loadPatients();
});
let filterTimer = null;
$("patient-filter").addEventListener("input", () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(loadPatients, 300);
});
$("patient-select").addEventListener("change", () => choosePatient($("patient-select").value));
$("start").addEventListener("click", startThread);
$("record-close").addEventListener("click", () => { $("record-panel").hidden = true; });
$("trend-close").addEventListener("click", () => { $("trend").hidden = true; state.trendCode = null; });
$("stop").addEventListener("click", stop);
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showView(b.dataset.view));
$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
});
document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("record-panel").hidden = true; });
let resizeTimer = null;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(redrawTrend, 150); });

// A SMART launch from the EHR binds the page to the launched patient: no list to choose from
// (the API refuses it anyway); without a SMART session the page offers the patient list.
async function startPage() {
  const launched = await fetch("/smart/session", { credentials: "same-origin" }).catch(() => null);
  if (launched && launched.ok) {
    const session = await launched.json();
    $("patient-filter").hidden = true;
    $("patient-select").hidden = true;
    $("picker").dataset.launched = session.patient;
    $("patient-select").replaceChildren(el("option", { value: session.patient }, session.patient));
    const saved = /thread=([A-Za-z0-9_-]+)/.exec(location.hash);
    if (saved) return restoreThread(saved[1]);
    return choosePatient(session.patient);
  }
  loadPatients();
  const saved = /thread=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (saved) restoreThread(saved[1]);
}
startPage();
