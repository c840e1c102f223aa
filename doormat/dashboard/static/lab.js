// The exercises' score board: GET /api/lab, hints on request, live through /api/events.
"use strict";

const $ = (s, r = document) => r.querySelector(s);
const el = (tag, attrs = {}, ...kids) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) n.append(kid);
  return n;
};
let board = null;
let filter = "all";

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok || data.ok === false) throw new Error(data.error || `${res.status}`);
  return data;
}

function announce(text) {
  const a = $("#announcer");
  a.textContent = "";
  setTimeout(() => { a.textContent = text; }, 30);
}

function stars(n) { return "★".repeat(n) + "☆".repeat(3 - n); }

function render() {
  if (!board) return;
  $("#score").textContent = `${board.solved} of ${board.total} solved · ${board.score} of ${board.max_score} points`;
  $("#progress").style.width = `${board.total ? Math.round(100 * board.solved / board.total) : 0}%`;
  const list = $("#exercises");
  const focusKey = document.activeElement && document.activeElement.dataset.key;
  list.textContent = "";
  for (const ex of board.exercises) {
    if (filter === "open" && ex.solved) continue;
    if (filter === "solved" && !ex.solved) continue;
    const hid = `ex-${ex.key}`;
    const hints = el("ol", {class: "hints", "aria-label": "Hints shown"});
    for (const h of ex.hints) hints.append(el("li", {text: h}));
    const more = ex.hints.length < ex.hints_total;
    const item = el("li", {class: `ex${ex.solved ? " solved" : ""}`, "aria-labelledby": hid},
      el("div", {class: "ex-head"},
        el("h2", {id: hid, text: ex.title}),
        el("span", {class: "stars", title: `difficulty ${ex.difficulty} of 3`, "aria-label": `difficulty ${ex.difficulty} of 3`, text: stars(ex.difficulty)}),
        el("span", {class: `state ${ex.solved ? "done" : "open"}`, text: ex.solved ? "SOLVED" : "OPEN"}),
        el("span", {class: "key", text: `${ex.key} · ${ex.points} pts`})),
      el("p", {class: "goal"}, el("strong", {text: "Learning goal: "}), ex.goal),
      el("p", {class: "instructions"}, el("strong", {text: "Task: "}), ex.instructions),
      ex.hints.length ? hints : null,
      ex.hints_total === 0 ? null : el("button", {
        type: "button", class: "hint", "data-key": ex.key, disabled: !more,
        text: more ? `Show hint ${ex.hints.length + 1} of ${ex.hints_total}` : `All ${ex.hints_total} hints shown`,
        onclick: () => reveal(ex.key),
      }),
      ex.solved ? el("p", {class: "detected"}, "Detected from the system's events: ", el("code", {text: ex.detected_by})) : null);
    list.append(item);
  }
  if (focusKey) {
    const b = list.querySelector(`button[data-key="${focusKey}"]`);
    if (b) b.focus();
  }
}

async function load() {
  const r = await api("/api/lab");
  board = r.board;
  render();
}

async function reveal(key) {
  try {
    const r = await api("/api/lab/hint", {key});
    const ex = board.exercises.find((e) => e.key === key);
    if (ex) ex.hints = r.hints;
    render();
    announce(`Hint: ${r.hints[r.hints.length - 1] || ""}`);
  } catch (err) {
    announce(`No hint: ${err.message}`);
  }
}

for (const r of document.querySelectorAll('input[name="filter"]')) {
  r.addEventListener("change", () => { if (r.checked) { filter = r.value; render(); } });
}

function connect() {
  const conn = $("#st-conn");
  const setConn = (state, text) => { conn.dataset.state = state; $("#st-conn-text").textContent = text; };
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => setConn("live", "live"));
  es.addEventListener("error", () => setConn("down", "reconnecting…"));
  es.addEventListener("snapshot", () => load().catch(() => {}));
  es.addEventListener("lab", (ev) => {
    const m = JSON.parse(ev.data);
    load().catch(() => {});
    if (m.solved) announce(`Exercise solved: ${m.solved.title}.`);
  });
}

load().catch((e) => { $("#score").textContent = `The score board is not available: ${e.message}`; });
connect();
