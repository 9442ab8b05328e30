// The personadlg chat page: talks to this server's OpenAI-compatible API (GET /v1/models,
// POST /v1/chat/completions) and shows the conditioning the server reports for each reply.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: {}, history: [] };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function showError(text) {
  const box = $("error");
  box.textContent = text || "";
  box.hidden = !text;
}

async function api(path, body) {
  const res = await fetch(path, body === undefined
    ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  let data = null;
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : res.status + " " + res.statusText;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return data;
}

function lines(text) {
  return text.split("\n").map((s) => s.trim()).filter(Boolean);
}

function profileOf(text) {
  const out = {};
  for (const line of lines(text)) {
    const at = line.search(/[:=]/);
    if (at > 0) out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function describe(info) {
  const parts = [info.method];
  if (info.supports && info.supports.length) parts.push("uses " + info.supports.join(", "));
  if (info.users && info.users.length) parts.push(info.users.length + " users");
  return parts.join(" · ");
}

function selectModel() {
  const m = state.models[$("model").value];
  const info = (m && m.personadlg) || {};
  const supports = info.supports || [];
  $("model-info").textContent = describe(info);
  $("user-section").hidden = !supports.includes("user");
  $("persona-section").hidden = !supports.includes("persona");
  $("profile-section").hidden = !supports.includes("profile");
  $("history-note").hidden = !supports.includes("history");
  const users = $("users");
  users.replaceChildren(...(info.users || []).map((u) => {
    const o = document.createElement("option");
    o.value = u.id;
    return o;
  }));
  const attrs = info.attributes || {};
  const box = $("attributes");
  box.replaceChildren();
  for (const [name, aspects] of Object.entries(attrs)) {
    const row = document.createElement("div");
    row.className = "attr";
    const label = document.createElement("label");
    label.textContent = name.replace(/_/g, " ");
    label.htmlFor = "attr-" + name;
    const sel = document.createElement("select");
    sel.id = "attr-" + name;
    sel.dataset.attribute = name;
    sel.append(new Option("(any)", ""), ...aspects.map((a) => new Option(a, a)));
    row.append(label, sel);
    box.append(row);
  }
  $("attributes-section").hidden = Object.keys(attrs).length === 0;
}

function addMessage(role, text, note) {
  const li = document.createElement("li");
  li.className = "msg " + role;
  if (text) {
    li.textContent = text;
  } else {
    const empty = document.createElement("em");
    empty.textContent = "(empty reply)";
    li.append(empty);
  }
  if (note) {
    const small = document.createElement("small");
    small.className = "conditioning";
    small.textContent = note;
    li.append(small);
  }
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function conditioningNote(p) {
  if (!p) return "";
  const parts = [p.model + " (" + p.method + ")"];
  if (p.user) parts.push("user " + p.user + (p.adapter ? ", adapter " + p.adapter : p.method === "lora" ? ", base model" : ""));
  if (p.persona && p.persona.length) parts.push("persona (" + p.persona_source + "): " + p.persona.join(" "));
  if (p.profile && Object.keys(p.profile).length) {
    parts.push("profile (" + p.profile_source + "): " + Object.entries(p.profile).map(([k, v]) => k + "=" + v).join(", "));
  }
  if (p.attributes && Object.keys(p.attributes).length) {
    parts.push("attributes: " + Object.entries(p.attributes).map(([k, v]) => k + "=" + v).join(", "));
  }
  const codes = p.choices && p.choices[0] && p.choices[0].codes;
  if (codes) parts.push("codes " + codes.join(" "));
  parts.push("seed " + p.seed);
  for (const n of p.notes || []) parts.push(n);
  return parts.join(" · ");
}

function requestBody() {
  const body = { model: $("model").value, messages: state.history.slice() };
  const t = $("temperature").value;
  if (t !== "") body.temperature = Number(t);
  const mt = $("max-tokens").value;
  if (mt !== "") body.max_tokens = Number(mt);
  const seed = $("seed").value;
  if (seed !== "") body.seed = Number(seed);
  const user = $("user").value.trim();
  if (!$("user-section").hidden && user) body.user = user;
  const persona = lines($("persona").value);
  if (!$("persona-section").hidden && persona.length) body.persona = persona;
  const profile = profileOf($("profile").value);
  if (!$("profile-section").hidden && Object.keys(profile).length) body.profile = profile;
  const attrs = {};
  for (const sel of $("attributes").querySelectorAll("select")) {
    if (sel.value) attrs[sel.dataset.attribute] = sel.value;
  }
  if (Object.keys(attrs).length) body.attributes = attrs;
  return body;
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text) return;
  showError("");
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  $("message").value = "";
  $("send").disabled = true;
  try {
    const data = await api("/v1/chat/completions", requestBody());
    const reply = data.choices[0].message.content;
    state.history.push({ role: "assistant", content: reply });
    addMessage("assistant", reply, conditioningNote(data.personadlg));
  } catch (err) {
    state.history.pop();  // the message was not answered: it is not part of the conversation
    showError(err.message);
  } finally {
    $("send").disabled = false;
    $("message").focus();
  }
}

async function load() {
  try {
    const health = await fetch("/health").then((r) => r.json().then((d) => ({ ok: r.ok, d })));
    if (!health.ok) {
      $("status").textContent = "loading models…";
      setTimeout(load, 1000);
      return;
    }
    const list = await api("/v1/models");
    state.models = Object.fromEntries(list.data.map((m) => [m.id, m]));
    $("model").replaceChildren(...list.data.map((m) => new Option(m.id + " (" + m.personadlg.method + ")", m.id)));
    selectModel();
    $("status").textContent = list.data.length + " model" + (list.data.length === 1 ? "" : "s") + " ready";
    $("status").className = "status ok";
  } catch (err) {
    $("status").textContent = err.status === 401 ? "API key needed (Decoding → API key)" : "error: " + err.message;
    $("status").className = "status bad";
  }
}

$("model").addEventListener("change", selectModel);
$("composer").addEventListener("submit", send);
$("api-key").addEventListener("change", load);
$("reset").addEventListener("click", () => {
  state.history = [];
  $("messages").replaceChildren();
  showError("");
});
load();
