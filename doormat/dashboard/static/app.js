// doormat dashboard: plain JS, no libraries. The server routes each event to panes
// (doormat/dashboard/panes.py); this file renders them, draws the sequence diagram and
// the exposure matrix, and drives the controls.
"use strict";

const MAX_LINES = 200;      // per pane
const MAX_ROWS = 60;        // envelopes in the sequence diagram
const MAX_LOG = 400;        // raw events in the log
const BADGE = {
  plain: "PLAINTEXT", sealed: "SEALED", alarm: "ALARM", refused: "REFUSED", ok: "OK", info: "INFO",
};
const BADGE_EXPOSED = "READS PLAINTEXT";

const S = {
  generation: null, panes: new Map(), paneLists: new Map(), lines: new Map(),
  devices: [], users: [], li: "off", backdoor: "none", choices: {li: [], backdoor: []},
  env: new Map(), order: [], agencyN: 0, exposure: null, victim: null, logN: 0,
};

const $ = (sel, root = document) => root.querySelector(sel);
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
const short = (dev) => {
  if (typeof dev !== "string" || !dev.includes("@")) return String(dev);
  const [user, rest] = dev.split("@", 2);
  const name = rest.split(".").slice(1).join(".");
  return name ? `${user}.${name}` : user;
};
const userOf = (dev) => (typeof dev === "string" ? dev.split(".")[0] : "");
const clock = (ms) => new Date(ms).toLocaleTimeString([], {hour12: false});

function announce(text) {
  const a = $("#announcer");
  a.textContent = "";
  setTimeout(() => { a.textContent = text; }, 30);
}

let toastTimer = null;
function toast(text, kind = "info") {
  const t = $("#toast");
  t.textContent = text;
  t.dataset.kind = kind;
  t.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("show"), 6000);
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new Error("the dashboard's server is not answering");
  }
  let data = {};
  try { data = await res.json(); } catch (e) { /* keep {} */ }
  if (!res.ok || data.ok === false) throw new Error(data.error || `${res.status} ${res.statusText}`);
  return data;
}

// -- panes ---------------------------------------------------------------------------

function buildPanes(panes) {
  const root = $("#panes");
  root.textContent = "";
  S.panes.clear(); S.paneLists.clear(); S.lines.clear();
  let row = null, groupBox = null;
  for (const p of panes) {
    const r = p.row || p.group;
    if (r !== row) {
      row = r;
      groupBox = el("div", {class: `pane-group g-${row}`});
      root.append(groupBox);
    }
    const hid = `pane-h-${cssId(p.id)}`;
    const list = el("ol", {class: "lines", role: "log", "aria-labelledby": hid});
    const box = el("section", {class: "pane", "data-pane": p.id, "data-group": p.group,
                               "aria-labelledby": hid},
      el("header", {class: "pane-head"},
        el("h3", {id: hid, text: p.title}),
        el("p", {class: "sees"}, el("span", {class: "visually-hidden", text: "Sees: "}), p.sees)),
      el("p", {class: "subtitle", text: p.subtitle}),
      paneTools(p),
      list,
      el("p", {class: "empty", text: "Nothing yet."}));
    groupBox.append(box);
    S.panes.set(p.id, box);
    S.paneLists.set(p.id, list);
  }
}

function cssId(s) { return String(s).replace(/[^a-zA-Z0-9_-]/g, "_"); }

function paneTools(p) {
  if (p.id === "relay") {
    return el("form", {class: "tool", id: "search-form", "aria-label": "Search the relay's store"},
      el("label", {for: "search-q", text: "Search the stored envelopes for"}),
      el("div", {class: "row"},
        el("input", {id: "search-q", type: "search", required: true, maxlength: 200,
                     autocomplete: "off", placeholder: "a word you sent"}),
        el("button", {type: "submit", text: "Search"})));
  }
  if (p.id === "court") {
    return el("div", {class: "tool row-tools"},
      el("button", {type: "button", id: "ledger-verify", text: "Verify the audit ledger"}));
  }
  if (p.id === "attackers") {
    const sel = el("select", {id: "attack-device", "aria-label": "Device to image"});
    return el("div", {class: "tool attack-tools"},
      el("button", {type: "button", id: "attack-escrow", text: "Steal the escrow key"}),
      el("div", {class: "row"},
        el("label", {for: "attack-device", class: "visually-hidden", text: "Device to image"}),
        sel, el("button", {type: "button", id: "attack-image", text: "Image this device"})),
      el("div", {class: "active-relay"},
        el("label", {class: "check"},
          el("input", {type: "checkbox", id: "identity-check", checked: S.identityCheck !== false}),
          " devices check a sender's new identity key"),
        el("button", {type: "button", id: "attack-active-relay", text: "Active relay: forge a message"}),
        el("p", {class: "result", id: "active-relay-result", role: "status"})),
      el("button", {type: "button", id: "ledger-tamper", text: "Edit an audit-ledger entry (insider)"}),
      el("button", {type: "button", id: "ledger-rollback", text: "Roll the audit ledger back (insider)"}));
  }
  return null;
}

function addLine(item, event) {
  const list = S.paneLists.get(item.pane);
  if (!list) return;
  const box = S.panes.get(item.pane);
  const group = box.dataset.group;
  const mapKey = item.key ? `${item.pane}|${item.key}` : null;
  if (mapKey && S.lines.has(mapKey)) {
    const li = S.lines.get(mapKey);
    const note = li.querySelector(".note");
    if (item.note && note && !note.textContent.includes(item.note)) {
      note.textContent += `; ${item.note}`;
    }
    return;
  }
  const exposed = item.status === "plain" && group !== "users";
  const badge = exposed ? BADGE_EXPOSED : (BADGE[item.status] || item.status.toUpperCase());
  const li = el("li", {class: `line s-${item.status}${exposed ? " exposed" : ""}`},
    el("span", {class: `badge b-${item.status}${exposed ? " b-exposed" : ""}`, text: badge}),
    el("span", {class: "text", text: item.text}),
    item.note ? el("span", {class: "note", text: item.note}) : null,
    el("time", {datetime: new Date(event.t).toISOString(), text: clock(event.t)}));
  list.append(li);
  if (mapKey) S.lines.set(mapKey, li);
  box.classList.add("has-lines");
  while (list.children.length > MAX_LINES) {
    const first = list.firstElementChild;
    for (const [k, v] of S.lines) if (v === first) S.lines.delete(k);
    first.remove();
  }
  list.scrollTop = list.scrollHeight;
}

function logEvent(msg) {
  const log = $("#log");
  const e = msg.event;
  const rest = Object.fromEntries(Object.entries(e).filter(([k]) => !["t", "actor", "kind"].includes(k)));
  log.append(el("li", {}, el("code", {class: "k", text: e.kind}), " ",
    el("span", {class: "a", text: e.actor}), " ",
    el("span", {class: "f", text: JSON.stringify(rest).slice(0, 400)})));
  S.logN += 1;
  while (log.children.length > MAX_LOG) log.firstElementChild.remove();
  $("#log-count").textContent = `(${S.logN})`;
}

// -- sequence diagram ------------------------------------------------------------------

const SVGNS = "http://www.w3.org/2000/svg";
const sv = (tag, attrs = {}, text) => {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
};

function envKey(from, id, to) { return `${from}|${id}|${to}`; }

function envelope(from, id, to) {
  const k = envKey(from, id, to);
  let r = S.env.get(k);
  if (!r) {
    r = {kind: "envelope", from, id, to, relay: null, deliver: null, tap: null, tapText: null,
         ghost: false, msgN: msgNumber(from, id)};
    S.env.set(k, r);
    S.order.push(k);
    while (S.order.length > MAX_ROWS) S.env.delete(S.order.shift());
  }
  return r;
}

const msgNumbers = new Map();
function msgNumber(from, id) {
  const k = `${from}|${id}`;
  if (!msgNumbers.has(k)) msgNumbers.set(k, msgNumbers.size + 1);
  return msgNumbers.get(k);
}

function diagramEvent(e) {
  switch (e.kind) {
    case "relay.accepted": envelope(e.from, e.id, e.to).relay = "sealed"; break;
    case "relay.delivered": {
      const r = envelope(e.from, e.id, e.to);
      if (e.reason === "ghost") { r.ghost = true; r.tap = r.tap || "pending"; }
      else if (!r.deliver) r.deliver = "pending";
      break;
    }
    case "device.received": {
      const r = S.env.get(envKey(e.from, e.id, e.actor));
      if (r) r.deliver = "read";
      break;
    }
    case "device.unreadable": {
      const r = S.env.get(envKey(e.from, e.id, e.actor));
      if (r) r.deliver = "failed";
      break;
    }
    case "relay.mirrored": { const r = envelope(e.from, e.id, e.to); r.tap = r.tap || "pending"; break; }
    case "relay.task_record": { const r = envelope(e.from, e.id, e.to); r.task = e.liid; break; }
    case "tap.captured": {
      const r = envelope(e.from, e.id, e.to);
      r.tap = e.readable ? "read" : "sealed";
      r.tapText = e.readable ? (e.text || "") : null;
      if (e.channel === "ghost") r.ghost = true;
      break;
    }
    case "agency.received": {
      S.agencyN += 1;
      const k = `agency|${S.agencyN}`;
      S.env.set(k, {kind: "agency", category: e.category, readable: !!e.readable,
                    source: e.source, liid: e.liid, text: e.text, from: e.from, to: e.to});
      S.order.push(k);
      while (S.order.length > MAX_ROWS) S.env.delete(S.order.shift());
      break;
    }
    default: return false;
  }
  return true;
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; drawDiagram(); });
}

function drawDiagram() {
  const svg = $("#seq");
  const wrap = $("#seq-wrap");
  const stick = wrap.scrollTop + wrap.clientHeight >= wrap.scrollHeight - 24;
  for (const n of [...svg.childNodes]) if (n.nodeName !== "title" && n.nodeName !== "desc") n.remove();
  const lifelines = [...S.devices.map((d) => ({id: d, label: short(d), cls: "ll-dev"})),
    {id: "relay", label: "relay", cls: "ll-relay"},
    {id: "tap", label: "tap (gov.)", cls: "ll-gov"},
    {id: "agency", label: "agency", cls: "ll-gov"}];
  const width = Math.max(wrap.clientWidth - 4, 120 + lifelines.length * 96);
  const left = 64, right = 70;
  const step = (width - left - right) / Math.max(1, lifelines.length - 1);
  const X = new Map(lifelines.map((l, i) => [l.id, left + i * step]));
  const rows = S.order.map((k) => S.env.get(k)).filter(Boolean);
  const blocks = rows.map((r) => (r.kind === "agency" ? 1 : 1 + (r.deliver || (!r.ghost && r.relay) ? 1 : 0) + (r.tap ? 1 : 0)));
  const lineH = 17, head = 40;
  const height = head + blocks.reduce((a, b) => a + b * lineH + 10, 0) + 20;
  svg.setAttribute("width", width);
  svg.setAttribute("height", Math.max(height, 140));
  svg.setAttribute("viewBox", `0 0 ${width} ${Math.max(height, 140)}`);
  svg.append(defs());
  // lifelines
  for (const l of lifelines) {
    const x = X.get(l.id);
    svg.append(sv("line", {x1: x, y1: head - 8, x2: x, y2: Math.max(height, 140) - 6, class: `lifeline ${l.cls}`}));
    const g = sv("g", {class: `ll-head ${l.cls}`});
    const w = Math.min(step - 6, 92);
    g.append(sv("rect", {x: x - w / 2, y: 4, width: w, height: 24, rx: 5}));
    g.append(sv("text", {x, y: 20, "text-anchor": "middle"}, l.label));
    svg.append(g);
  }
  let y = head + 8;
  let sealedAtRelay = 0, tapRead = 0, tapSealed = 0, delivered = 0;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i];
    const g = sv("g", {class: "row"});
    if (r.kind === "agency") {
      const state = r.readable ? "read" : "sealed";
      const what = r.category === "IRI" ? "metadata" : r.readable ? `READ: ${(r.text || "").slice(0, 24)}` : "ciphertext: unreadable";
      arrow(g, X.get("relay"), X.get("agency"), y, r.category === "IRI" ? "meta" : state,
        `${r.category} via ${r.source || "?"}: ${what}`,
        `${r.category} record ${short(r.from)} → ${short(r.to)} for ${r.liid}, via ${r.source}: ${what}`);
      g.append(sv("text", {x: 6, y: y + 4, class: "rowlabel"}, r.category || "LI"));
      y += lineH + 10;
      svg.append(g);
      continue;
    }
    g.append(sv("text", {x: 6, y: y + 4, class: "rowlabel"}, `#${r.msgN}`));
    const fx = X.get(r.from), tx = X.get(r.to), rx = X.get("relay"), tapx = X.get("tap");
    if (fx !== undefined) {
      arrow(g, fx, rx, y, "sealed", "sealed", `${short(r.from)} → relay: sealed envelope for ${short(r.to)}; the relay cannot read it`);
      sealedAtRelay += 1;
    }
    y += lineH;
    if (!r.ghost && tx !== undefined && r.deliver) {
      const st = r.deliver === "read" ? "read" : r.deliver === "failed" ? "failed" : "pending";
      const label = st === "read" ? "read by recipient" : st === "failed" ? "could not open" : "in transit";
      arrow(g, rx, tx, y, st, label, `relay → ${short(r.to)}: ${label}`);
      if (st === "read") delivered += 1;
      y += lineH;
    }
    if (r.tap) {
      const st = r.tap;
      let label = st === "read" ? `READ: ${(r.tapText || "").slice(0, 28)}${(r.tapText || "").length > 28 ? "…" : ""}`
        : st === "sealed" ? "sealed: unreadable" : "in transit";
      if (r.ghost) label = `ghost ${short(r.to)}: ${label}`;
      arrow(g, rx, tapx, y, st, label, `relay → tap${r.ghost ? " (ghost device)" : " (mirror)"}: ${label}`);
      if (st === "read") tapRead += 1;
      if (st === "sealed") tapSealed += 1;
      y += lineH;
    }
    y += 10;
    svg.append(g);
  }
  const summary = rows.length === 0 ? "No envelopes yet."
    : `${sealedAtRelay} envelope(s) through the relay, all sealed to it; ${delivered} read by their recipients; `
      + `tap: ${tapRead} read, ${tapSealed} sealed.`;
  $("#seq-desc").textContent = summary;
  $("#seq-summary").textContent = summary;
  if (stick) wrap.scrollTop = wrap.scrollHeight;
}

function defs() {
  const d = sv("defs");
  const filled = sv("marker", {id: "head-read", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 9, markerHeight: 9, orient: "auto-start-reverse"});
  filled.append(sv("path", {d: "M0,0 L10,5 L0,10 Z", class: "h-read"}));
  const open = sv("marker", {id: "head-sealed", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 9, markerHeight: 9, orient: "auto-start-reverse"});
  open.append(sv("path", {d: "M0,0 L10,5 L0,10", class: "h-sealed"}));
  const cross = sv("marker", {id: "head-failed", viewBox: "0 0 10 10", refX: 5, refY: 5,
    markerWidth: 9, markerHeight: 9});
  cross.append(sv("path", {d: "M1,1 L9,9 M9,1 L1,9", class: "h-failed"}));
  d.append(filled, open, cross);
  return d;
}

function arrow(g, x1, x2, y, state, label, title) {
  const dir = x2 >= x1 ? 1 : -1;
  const line = sv("line", {x1: x1 + dir * 3, y1: y, x2: x2 - dir * 3, y2: y, class: `a-${state}`});
  const head = state === "read" ? "head-read" : state === "failed" ? "head-failed" : (state === "sealed" || state === "meta") ? "head-sealed" : null;
  if (head) line.setAttribute("marker-end", `url(#${head})`);
  const t = sv("title", {}, title);
  line.append(t);
  g.append(line);
  const mx = (x1 + x2) / 2;
  const approx = label.length * 5.6;
  if (state === "sealed") {
    // a small padlock before the label: the shape says "sealed" without colour
    const lock = sv("g", {class: "lock", transform: `translate(${mx - approx / 2 - 14},${y - 13})`});
    lock.append(sv("rect", {x: 0, y: 4, width: 10, height: 7, rx: 1}));
    lock.append(sv("path", {d: "M2.5,4 V2.5 a2.5,2.5 0 0 1 5,0 V4"}));
    g.append(lock);
  }
  if (state === "read") {
    // an open eye before the label: "this party reads it"
    const eye = sv("g", {class: "eye", transform: `translate(${mx - approx / 2 - 15},${y - 12})`});
    eye.append(sv("path", {d: "M0,4 Q6,-2 12,4 Q6,10 0,4 Z"}));
    eye.append(sv("circle", {cx: 6, cy: 4, r: 1.8}));
    g.append(eye);
  }
  g.append(sv("text", {x: mx, y: y - 4, "text-anchor": "middle", class: `alabel l-${state}`}, label));
}

// -- exposure matrix --------------------------------------------------------------------

const OBS_NAMES = {
  "relay": "Relay operator", "blanket-tap": "Blanket tap", "attacker:escrow-key": "Attacker with the stolen escrow key",
  "attacker:device-image": "Attacker with one device image",
  "attacker:active-relay": "Active relay (the operator forging identity keys)",
};

function observerName(name) {
  if (OBS_NAMES[name]) return OBS_NAMES[name];
  if (name.startsWith("enterprise:")) return `Enterprise ${name.slice(11)} (its own archive)`;
  if (name.startsWith("attacker:")) return `Attacker: ${name.slice(9)}`;
  if (name === "agency") return "Agency (under warrant)";
  return name;
}

function renderExposure(x) {
  const root = $("#exposure");
  root.textContent = "";
  if (!x) { root.append(el("p", {class: "empty", text: "Not computed yet."})); return; }
  const obs = x.observers || [];
  const max = Math.max(1, ...obs.map((o) => Math.max(o.captured, o.metadata_records)));
  const table = el("table", {class: "matrix"},
    el("caption", {text: `${x.messages_sent} message(s) sent, ${x.messages_delivered} delivered · LI ${x.li} · back door ${x.backdoor} · computed ${clock(x.computed_ms)} in ${x.elapsed_ms} ms · device image of ${short(x.image_of)}`}),
    el("thead", {}, el("tr", {},
      el("th", {scope: "col", text: "Observer"}), el("th", {scope: "col", text: "Keys held"}),
      el("th", {scope: "col", text: "Captured"}), el("th", {scope: "col", text: "Readable"}),
      el("th", {scope: "col", text: "Metadata records"}), el("th", {scope: "col", text: "Verdict"}))));
  const tb = el("tbody");
  for (const o of obs) {
    const reads = o.readable > 0;
    const prev = o.previous || null;
    tb.append(el("tr", {class: reads ? "reads" : "sealed", "data-observer": o.name},
      el("th", {scope: "row"}, observerName(o.name), el("span", {class: "obs-id", text: o.name})),
      el("td", {class: "keys", text: (o.keys_held || []).join(", ") || "none"}),
      barCell(o.captured, max, "captured", prev && prev.captured),
      barCell(o.readable, max, reads ? "readable" : "zero", prev && prev.readable),
      barCell(o.metadata_records, max, "meta", prev && prev.metadata_records),
      el("td", {class: "verdict"}, el("span", {class: `badge ${reads ? "b-plain b-exposed" : "b-sealed"}`,
        text: reads ? `READS ${o.readable}` : "READS NOTHING"}))));
  }
  table.append(tb);
  root.append(table);
}

function barCell(n, max, cls, prev) {
  const pct = Math.round((100 * n) / max);
  const delta = prev !== null && prev !== undefined && prev !== n ? ` (${n > prev ? "+" : ""}${n - prev})` : "";
  return el("td", {class: "num"},
    el("span", {class: "n", text: `${n}${delta}`}),
    el("span", {class: `bar bar-${cls}`, "aria-hidden": "true"},
      el("span", {class: "fill", style: `width:${pct}%`})));
}

// -- controls -------------------------------------------------------------------------

function buildControls(snap) {
  S.choices = snap.choices;
  radios("#li-choices", "li", snap.choices.li, snap.li, "#li-help", async (v) => api("/api/li", {mode: v}));
  radios("#bd-choices", "backdoor", snap.choices.backdoor, snap.backdoor, "#bd-help", async (v) => api("/api/backdoor", {backdoor: v}));
  const dev = $("#send-device");
  const keep = dev.value;
  dev.textContent = "";
  for (const e of snap.enterprises) {
    const og = el("optgroup", {label: `${e.name}${e.archive ? " (archive)" : ""}`});
    for (const u of e.users) for (const d of u.devices) og.append(el("option", {value: d, text: short(d)}));
    dev.append(og);
  }
  if (keep && snap.devices.includes(keep)) dev.value = keep;
  const to = $("#send-to");
  const keepTo = to.value;
  to.textContent = "";
  for (const u of snap.users) to.append(el("option", {value: u, text: u}));
  to.value = keepTo && snap.users.includes(keepTo) ? keepTo : (snap.users[1] || snap.users[0]);
  if (to.value === userOf(dev.value)) {
    to.selectedIndex = (to.selectedIndex + 1) % to.options.length;
  }
  const ad = $("#attack-device");
  if (ad) {
    ad.textContent = "";
    for (const d of snap.devices) ad.append(el("option", {value: d, text: short(d)}));
    if (snap.victim) ad.value = snap.victim;
  }
  const w = snap.warrant || {enabled: false, note: ""};
  $("#warrant-fields").disabled = !w.enabled;
  $("#warrant-note").textContent = w.enabled ? "Checked by the interceptor: two approvals, exact targets, a window, fail closed." : w.note;
  $("#warrant-form").classList.toggle("disabled", !w.enabled);
}

function radios(sel, name, choices, current, helpSel, post) {
  const box = $(sel);
  box.textContent = "";
  for (const c of choices) {
    const id = `${name}-${c}`;
    const input = el("input", {type: "radio", name, id, value: c, "aria-describedby": helpSel.slice(1)});
    input.checked = c === current;
    input.addEventListener("change", async () => {
      if (!input.checked) return;
      try {
        await post(c);
      } catch (err) {
        toast(`Refused: ${err.message}`, "error");
        setRadio(name, name === "li" ? S.li : S.backdoor);
      }
    });
    box.append(el("label", {for: id, class: "radio"}, input, el("span", {text: c})));
  }
}

function setRadio(name, value) {
  for (const r of document.querySelectorAll(`input[name="${name}"]`)) r.checked = r.value === value;
}

function setModes(m) {
  S.li = m.li; S.backdoor = m.backdoor;
  $("#st-li").textContent = m.li;
  $("#st-backdoor").textContent = m.backdoor;
  $("#st-li").dataset.value = m.li;
  $("#st-backdoor").dataset.value = m.backdoor;
  setRadio("li", m.li);
  setRadio("backdoor", m.backdoor);
  if (typeof m.identity_check === "boolean") {
    S.identityCheck = m.identity_check;
    const ic = $("#identity-check");
    if (ic) ic.checked = m.identity_check;
  }
}

function activeRelayText(r) {
  const who = `${r.impersonated_user} (${short(r.impersonated)})`;
  if (r.forged_shown) {
    return `Identity check OFF: the forged message was shown on ${short(r.target)} as ${who}'s. ` +
      `The reply was ${r.reply_read_by_attacker ? "READ by the relay operator" : "not read by the operator"}` +
      ` and ${r.reply_read_by_peer ? "read" : "NOT readable"} on the real ${short(r.impersonated)}. ` +
      `The operator reads ${r.readable} of ${r.captured} messages.`;
  }
  const alarm = r.alarms ? `IDENTITY ALARM naming ${r.alarm_user} / ${r.alarm_device} (${r.alarm_kind})` : "no alarm";
  return `Identity check on: the forged message was REFUSED on ${short(r.target)}: ${alarm}. ` +
    `The reply went to the real ${short(r.impersonated)} (${r.reply_read_by_peer ? "read there" : "not read there"}); ` +
    `the operator reads ${r.readable} of ${r.captured} messages.`;
}

function wireForms() {
  $("#send-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("#send-result");
    const body = {device: $("#send-device").value, to_user: $("#send-to").value, text: $("#send-text").value};
    out.textContent = "Sending…";
    try {
      const r = await api("/api/send", body);
      out.textContent = `Sent to ${r.devices.length} device(s).`;
      $("#send-text").value = "";
      $("#send-text").focus();
    } catch (err) {
      out.textContent = `Not sent: ${err.message}`;
    }
  });
  $("#warrant-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const checked = (n) => [...f.querySelectorAll(`input[name="${n}"]:checked`)].map((i) => i.value);
    const body = {
      targets: $("#w-targets").value,
      categories: checked("categories"),
      approvals: checked("approvals"),
      starts_in_s: Math.round(Number($("#w-start").value || 0) * 60),
      duration_s: Math.round(Number($("#w-hours").value || 0) * 3600),
      tamper: $("#w-tamper").checked,
    };
    const out = $("#warrant-result");
    out.textContent = "Submitting…";
    try {
      const r = await api("/api/warrant", body);
      const d = r.decision || {};
      out.textContent = d.accepted
        ? `Accepted: ${d.message || d.reason || "ok"}.${S.li !== "scoped" ? " The relay runs warrant tasks only while the LI switch is on scoped." : ""}`
        : `Refused (${d.reason || "?"}): ${d.message || ""}`;
    } catch (err) {
      out.textContent = `Not submitted: ${err.message}`;
    }
  });
  $("#reset").addEventListener("click", async () => {
    const b = $("#reset");
    b.disabled = true;
    b.textContent = "Resetting…";
    try {
      await api("/api/reset", {});
      toast("A fresh system is running.");
    } catch (err) {
      toast(`Reset failed: ${err.message}`, "error");
    } finally {
      b.disabled = false;
      b.textContent = "Reset system";
    }
  });
  $("#exp-now").addEventListener("click", async () => {
    const b = $("#exp-now");
    b.disabled = true;
    try {
      const r = await api("/api/exposure", {});
      S.exposure = r.exposure;
      renderExposure(r.exposure);
      announce("Exposure matrix recomputed.");
    } catch (err) {
      toast(`Not computed: ${err.message}`, "error");
    } finally { b.disabled = false; }
  });
}

function wirePaneTools() {
  const sf = $("#search-form");
  if (sf) sf.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("/api/relay/search", {query: $("#search-q").value});
      announce(`Found in ${r.result.found} of ${r.result.envelopes} envelopes.`);
    } catch (err) { toast(`Search failed: ${err.message}`, "error"); }
  });
  const esc = $("#attack-escrow");
  if (esc) esc.addEventListener("click", async () => {
    try {
      const r = await api("/api/attack", {attack: "escrow-key"});
      announce(`The stolen escrow key reads ${r.result.readable} of ${r.result.captured} messages.`);
    } catch (err) { toast(`Attack failed: ${err.message}`, "error"); }
  });
  const ver = $("#ledger-verify");
  if (ver) ver.addEventListener("click", async () => {
    try {
      const r = await api("/api/ledger/verify", {});
      announce(r.result.ok ? "The audit ledger verifies." : `The audit ledger FAILED: ${(r.result.problems || [])[0] || ""}`);
    } catch (err) { toast(`Not verified: ${err.message}`, "error"); }
  });
  const tam = $("#ledger-tamper");
  if (tam) tam.addEventListener("click", async () => {
    try {
      const r = await api("/api/ledger/tamper", {});
      announce(`Ledger entry ${r.result.index} edited: ${r.result.what}.`);
    } catch (err) { toast(`Not edited: ${err.message}`, "error"); }
  });
  const rb = $("#ledger-rollback");
  if (rb) rb.addEventListener("click", async () => {
    try {
      const r = await api("/api/ledger/rollback", {});
      announce(`Ledger rolled back: ${r.result.removed} entries removed, ${r.result.kept} kept.`);
    } catch (err) { toast(`Not rolled back: ${err.message}`, "error"); }
  });
  const ar = $("#attack-active-relay");
  if (ar) ar.addEventListener("click", async () => {
    const out = $("#active-relay-result");
    ar.disabled = true;
    out.textContent = "Forging a first message…";
    try {
      const r = await api("/api/attack/active-relay", {});
      out.textContent = activeRelayText(r.result);
      out.dataset.outcome = r.result.forged_shown ? "forged" : "refused";
      announce(out.textContent);
    } catch (err) {
      out.textContent = "";
      toast(`Attack failed: ${err.message}`, "error");
    } finally { ar.disabled = false; }
  });
  const ic = $("#identity-check");
  if (ic) ic.addEventListener("change", async () => {
    try {
      const r = await api("/api/identity-check", {on: ic.checked});
      announce(`Identity check ${r.identity_check ? "on" : "OFF"} on every device.`);
    } catch (err) {
      ic.checked = !ic.checked;
      toast(`Not switched: ${err.message}`, "error");
    }
  });
  const img = $("#attack-image");
  if (img) img.addEventListener("click", async () => {
    try {
      const r = await api("/api/attack", {attack: "device-image", device: $("#attack-device").value});
      announce(`The device image reads ${r.result.readable} of ${r.result.captured} messages.`);
    } catch (err) { toast(`Attack failed: ${err.message}`, "error"); }
  });
}

function setLab(summary) {
  const wrap = $("#st-lab-wrap");
  if (!summary) { wrap.hidden = true; return; }
  wrap.hidden = false;
  $("#st-lab").textContent = `${summary.solved} of ${summary.total} solved · ${summary.score} pts`;
}

// -- the stream --------------------------------------------------------------------------

function applySnapshot(snap) {
  S.generation = snap.generation;
  S.devices = snap.devices; S.users = snap.users; S.victim = snap.victim;
  S.env.clear(); S.order = []; S.agencyN = 0; msgNumbers.clear(); S.logN = 0;
  $("#log").textContent = "";
  buildPanes(snap.panes);
  buildControls(snap);
  wirePaneTools();
  setModes({li: snap.li, backdoor: snap.backdoor, identity_check: snap.identity_check});
  for (const m of snap.events) handleEvent(m, false);
  scheduleDraw();
  S.exposure = snap.exposure;
  renderExposure(snap.exposure);
  setLab(snap.lab);
}

function handleEvent(msg, live = true) {
  for (const item of msg.items) addLine(item, msg.event);
  logEvent(msg);
  if (diagramEvent(msg.event)) scheduleDraw();
  if (!live) return;
  const e = msg.event;
  if (e.kind === "tap.captured" && e.readable) announce(`The tap read a message from ${short(e.from)}.`);
  else if (e.kind === "device.kt_alarm") announce(`Key transparency alarm on ${short(e.actor)}.`);
  else if (e.kind === "interceptor.warrant_refused") announce(`Warrant refused: ${e.reason}.`);
}

function connect() {
  const conn = $("#st-conn");
  const setConn = (state, text) => { conn.dataset.state = state; $("#st-conn-text").textContent = text; };
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => setConn("live", "live"));
  es.addEventListener("error", () => setConn("down", "reconnecting…"));
  es.addEventListener("snapshot", (ev) => {
    const snap = JSON.parse(ev.data);
    if (S.generation !== null && snap.generation !== S.generation) announce("A fresh system is running.");
    applySnapshot(snap);
    setConn("live", "live");
  });
  es.addEventListener("event", (ev) => handleEvent(JSON.parse(ev.data)));
  es.addEventListener("modes", (ev) => setModes(JSON.parse(ev.data)));
  es.addEventListener("exposure", (ev) => { S.exposure = JSON.parse(ev.data).exposure; renderExposure(S.exposure); });
  es.addEventListener("lab", (ev) => {
    const m = JSON.parse(ev.data);
    setLab(m.summary);
    if (m.solved) {
      toast(`Exercise solved: ${m.solved.title} (+${m.solved.points})`, "solved");
      announce(`Exercise solved: ${m.solved.title}.`);
    }
  });
}

window.addEventListener("resize", scheduleDraw);
wireForms();
connect();
