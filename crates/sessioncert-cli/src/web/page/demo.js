// The sessioncert demo page. Everything shown is what the browser client reports through
// its `onWire` observer: bytes that really crossed the wire, never a key. Plain ES module,
// no build step; user-supplied text is only ever set as textContent.
import * as sessioncert from "/sessioncert.js";

const { connect } = sessioncert;
const $ = (id) => document.getElementById(id);
const BASE = location.origin;
// The pin as the server that sent this page states it (see the note on the page: a real
// app ships it with its code). connect() verifies the server against it.
const PIN = document.querySelector('meta[name="sessioncert-pin"]').content;

// ---------------------------------------------------------------- byte views

const MAX_SHOWN = 1024; // bytes rendered per view; the length is always the full one
let format = "hex";
const views = []; // { pre, bytes } re-rendered when the format changes

function hex(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = [];
    for (let j = i; j < Math.min(i + 16, bytes.length); j += 2) {
      row.push(
        bytes[j].toString(16).padStart(2, "0") +
          (j + 1 < bytes.length ? bytes[j + 1].toString(16).padStart(2, "0") : ""),
      );
    }
    lines.push(row.join(" "));
  }
  return lines.join("\n");
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function render(pre, bytes) {
  const shown = bytes.subarray(0, MAX_SHOWN);
  const more = bytes.length - shown.length;
  pre.textContent =
    (format === "hex" ? hex(shown) : base64(shown)) + (more > 0 ? `\n… ${more} more bytes` : "");
}

/** A block showing `bytes`: its length, then hex or base64. */
function bytesView(bytes, label) {
  const box = document.createElement("div");
  box.className = "bytes";
  const len = document.createElement("span");
  len.className = "len";
  len.textContent = `${label ? label + ": " : ""}${bytes.length} bytes`;
  const pre = document.createElement("pre");
  pre.tabIndex = 0; // scrollable regions must be reachable by keyboard
  pre.setAttribute("aria-label", `${label || "bytes"}, ${bytes.length} bytes`);
  render(pre, bytes);
  views.push({ pre, bytes });
  box.append(len, pre);
  return box;
}

for (const r of document.querySelectorAll('input[name="format"]')) {
  r.addEventListener("change", () => {
    format = r.value;
    for (const v of views) render(v.pre, v.bytes);
  });
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setStatus(id, text, kind) {
  const p = $(id);
  p.textContent = text;
  p.className = "result" + (kind ? " " + kind : "");
}

/** The error's class as the client exports it, then its message. */
function describeError(e) {
  const kinds = [
    "PinMismatch",
    "Rejected",
    "SessionExpired",
    "OutcomeUnknown",
    "Truncated",
    "ProtocolError",
    "TransportError",
    "SessionCertError",
  ];
  let name = e && e.name ? e.name : "Error";
  for (const k of kinds) {
    if (typeof sessioncert[k] === "function" && e instanceof sessioncert[k]) {
      name = k;
      break;
    }
  }
  if (e && e.name === "AbortError") name = "AbortError";
  const extra = e && e.code ? ` (code ${e.code}${e.status ? ", HTTP " + e.status : ""})` : "";
  return `${name}${extra}: ${e && e.message ? e.message : String(e)}`;
}

function pathOf(url) {
  try {
    const u = new URL(url, BASE);
    return u.origin === BASE ? u.pathname + u.search : u.href;
  } catch {
    return String(url);
  }
}

function headerLines(headers) {
  return Object.entries(headers || {})
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n");
}

// ---------------------------------------------------------------- 1. identity

$("pin").textContent = PIN;

/** The pin of another identity: a fresh Ed25519 key made here (its private half is
 *  non-extractable and dropped at once). */
async function otherPin() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return "ed25519:" + base64(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

$("wrong-pin").addEventListener("click", async () => {
  let bad;
  try {
    bad = await otherPin();
  } catch (e) {
    setStatus("wrong-pin-result", `This browser cannot make an Ed25519 key: ${describeError(e)}`, "bad");
    return;
  }
  setStatus("wrong-pin-result", `Connecting with ${bad} …`);
  try {
    const s = await connect(BASE, { pin: bad });
    await s.close().catch(() => {});
    setStatus("wrong-pin-result", "The wrong pin was accepted — this must never happen.", "bad");
  } catch (e) {
    setStatus("wrong-pin-result", `Refused, as it must be. ${describeError(e)}`, "ok");
  }
});

// ---------------------------------------------------------------- 2. handshake

let session = null;
let connecting = null; // the promise of a connect() under way
let handshaking = false; // set before connect() starts: it sends its first request at once
let releaseStep = null;
let sink = null; // where the current API/notes operation's wire events go

function addStep(what, line, why, bytes) {
  const li = el("li");
  li.append(el("div", "what", what));
  if (line) li.append(el("code", null, line));
  if (why) li.append(el("p", "why", why));
  if (bytes) li.append(bytesView(bytes, what));
  $("steps").append(li);
}

/** The transport given to connect(): fetch, paused before each request in step mode. */
async function transport(input, init) {
  if (handshaking && $("step-mode").checked) {
    const method = (init && init.method) || (input instanceof Request ? input.method : "GET");
    const url = typeof input === "string" ? input : input instanceof Request ? input.url : String(input);
    setStatus("handshake-status", `Paused. Next request: ${method} ${pathOf(url)}`);
    const next = $("next-step");
    next.hidden = false;
    next.focus();
    await new Promise((resolve) => (releaseStep = resolve));
    next.hidden = true;
    releaseStep = null;
  }
  return globalThis.fetch(input, init);
}

$("next-step").addEventListener("click", () => releaseStep && releaseStep());

function onMainWire(e) {
  switch (e.kind) {
    case "config":
      addStep(
        "1. Key configuration",
        `GET ${pathOf(e.url)} → ${e.status}`,
        "The server's current handshake key, signed by its identity key. The client checks the signature against the pin before it uses anything in it.",
        e.bytes,
      );
      break;
    case "client-hello":
      addStep(
        "2. ClientHello",
        "POST /.well-known/sessioncert/handshake",
        "Noise NK message 1: the client's fresh ephemeral X25519 public key and an encrypted payload (protocol version, suites). The ephemeral private key stays inside WebCrypto.",
        e.bytes,
      );
      break;
    case "server-hello":
      addStep(
        "3. ServerHello",
        `← ${e.status}`,
        "Noise NK message 2: the server's ephemeral public key and its encrypted payload with a session ticket. The server stores nothing until the key confirmation arrives with the first sealed request.",
        e.bytes,
      );
      break;
    case "established":
      addStep(
        "4. Session established",
        `session id ${e.sessionId} · ${e.suite}`,
        "Both sides derived the same session keys from the handshake; they never crossed the wire, and here they are non-extractable CryptoKeys. Only the session id is shown.",
      );
      $("session-id").textContent = e.sessionId;
      $("suite").textContent = e.suite;
      // A session refused later is replaced by a fresh handshake: say which one is live.
      if (!handshaking) setStatus("handshake-status", `Handshaked anew. Session ${e.sessionId}.`, "ok");
      break;
    case "closed":
      addStep("Session closed", `session id ${e.sessionId}`, "A sealed close: the server ends the session and refuses its id from now on.");
      break;
    case "request":
    case "request-chunk":
    case "response":
    case "response-chunk":
      if (sink) sink.push(e);
      break;
  }
}

async function ensureSession() {
  if (session) return session;
  if (connecting) return connecting;
  $("steps").replaceChildren();
  $("session-id").textContent = "—";
  $("suite").textContent = "—";
  $("connect").disabled = true;
  setStatus("handshake-status", "Connecting …");
  const t0 = performance.now();
  handshaking = true;
  connecting = connect(BASE, { pin: PIN, fetch: transport, onWire: onMainWire });
  try {
    session = await connecting;
    const ms = (performance.now() - t0).toFixed(1);
    setStatus("handshake-status", `Connected in ${ms} ms. Session ${session.id}.`, "ok");
    $("close").disabled = false;
    return session;
  } catch (e) {
    setStatus("handshake-status", `Handshake failed. ${describeError(e)}`, "bad");
    $("connect").disabled = false;
    throw e;
  } finally {
    handshaking = false;
    connecting = null;
    $("next-step").hidden = true;
  }
}

$("connect").addEventListener("click", () => {
  ensureSession().catch(() => {}); // shown in the status line
});

$("close").addEventListener("click", async () => {
  if (!session) return;
  const s = session;
  session = null;
  $("close").disabled = true;
  try {
    await queue(() => s.close());
    setStatus("handshake-status", "Session closed. Connect again for a new one.");
  } catch (e) {
    setStatus("handshake-status", `Close failed. ${describeError(e)}`, "bad");
  }
  $("connect").disabled = false;
});

// API and notes operations run one at a time on the main session, so each one's wire
// events are exactly its own.
let tail = Promise.resolve();
function queue(fn) {
  const run = tail.then(fn, fn);
  tail = run.catch(() => {});
  return run;
}

/** Runs `fn(session)` collecting the wire events it causes. */
function sealedOp(fn) {
  return queue(async () => {
    const s = await ensureSession();
    const events = [];
    sink = events;
    try {
      return { result: await fn(s), events };
    } finally {
      sink = null;
    }
  });
}

// ---------------------------------------------------------------- 3. API

function wireBlock(target, meta, parts) {
  const box = $(target);
  box.replaceChildren();
  box.append(el("p", "meta", meta));
  for (const [label, bytes] of parts) box.append(bytesView(bytes, label));
}

$("api-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("api-body").value;
  try {
    JSON.parse(text);
  } catch (e) {
    setStatus("api-status", `Not valid JSON: ${e.message}`, "bad");
    return;
  }
  const full = $("api-full").checked;
  $("api-send").disabled = true;
  // Nothing of the previous exchange stays on screen beside this one's result or error.
  for (const id of ["api-sent", "api-received", "api-opened"]) $(id)?.replaceChildren();
  setStatus("api-status", "Sending …");
  try {
    const { result, events } = await sealedOp(async (s) => {
      const res = await s.fetch("/apiTest", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: text,
        full,
      });
      return { res, body: await res.text() };
    });
    const req = events.find((e) => e.kind === "request");
    const resp = events.find((e) => e.kind === "response");
    const reqParts = events.filter((e) => e.kind === "request" || e.kind === "request-chunk");
    const respParts = events.filter((e) => e.kind === "response" || e.kind === "response-chunk");
    if (req) {
      wireBlock(
        "api-sent",
        `${req.method} ${pathOf(req.url)}\n${headerLines(req.headers)}`,
        reqParts.map((e, i) => [i === 0 ? "sealed body" : `chunk ${i}`, e.bytes]),
      );
    }
    if (resp) {
      wireBlock(
        "api-received",
        `HTTP ${resp.status}\n${headerLines(resp.headers)}`,
        respParts.map((e, i) => [i === 0 ? "sealed body" : `chunk ${i}`, e.bytes]),
      );
    }
    const opened = $("api-opened");
    opened.replaceChildren();
    opened.append(
      el("p", "meta", `HTTP ${result.res.status} · content-type: ${result.res.headers.get("content-type") || "(none)"}`),
    );
    let pretty = result.body;
    try {
      pretty = JSON.stringify(JSON.parse(result.body), null, 2);
    } catch {
      /* shown as it came */
    }
    const pre = el("pre", null, pretty);
    pre.tabIndex = 0;
    pre.setAttribute("aria-label", "opened response body");
    pre.id = "api-opened-body";
    opened.append(pre);
    const sent = reqParts.reduce((n, e) => n + e.bytes.length, 0);
    const got = respParts.reduce((n, e) => n + e.bytes.length, 0);
    setStatus(
      "api-status",
      `Sealed round trip: ${new TextEncoder().encode(text).length} bytes of JSON went out as ${sent} sealed bytes; ${got} sealed bytes came back and opened to ${new TextEncoder().encode(result.body).length} bytes.`,
      "ok",
    );
  } catch (e) {
    setStatus("api-status", describeError(e), "bad");
  } finally {
    $("api-send").disabled = false;
  }
});

// ---------------------------------------------------------------- 4. notes

function summarize(events) {
  const req = events.find((e) => e.kind === "request");
  const resp = events.find((e) => e.kind === "response");
  if (!req || !resp) return "";
  return `Last exchange: ${req.method} ${pathOf(req.url)} sealed in ${req.bytes.length} bytes → HTTP ${resp.status}, ${resp.bytes.length} sealed bytes back.`;
}

function showNotes(notes) {
  const list = $("notes-list");
  list.replaceChildren();
  if (!notes.length) {
    list.append(el("li", "empty", "No notes yet."));
    return;
  }
  for (const n of notes) {
    const li = el("li");
    const text = el("div");
    text.append(el("span", "title", n.title));
    if (n.body) text.append(document.createTextNode(" — " + n.body));
    const del = el("button", null, "Delete");
    del.type = "button";
    del.setAttribute("aria-label", `Delete note “${n.title}”`);
    del.addEventListener("click", () => notesAction(`DELETE /notes/${n.id}`, (s) => s.fetch(`/notes/${n.id}`, { method: "DELETE" })));
    li.append(text, del);
    list.append(li);
  }
}

async function notesAction(what, fn) {
  setStatus("notes-status", `${what} …`);
  try {
    const { result, events } = await sealedOp(async (s) => {
      const res = await fn(s);
      const body = await res.text();
      if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${body}`);
      return body;
    });
    $("notes-wire").textContent = summarize(events);
    const { result: list, events: listEvents } = await sealedOp(async (s) => {
      const res = await s.fetch("/notes");
      if (!res.ok) throw new Error(`GET /notes: HTTP ${res.status}`);
      return res.json();
    });
    showNotes(list);
    setStatus("notes-status", `${what}: done. ${list.length} note(s).`, "ok");
    if (what === "GET /notes") $("notes-wire").textContent = summarize(listEvents);
    return result;
  } catch (e) {
    setStatus("notes-status", describeError(e), "bad");
  }
}

$("note-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const title = $("note-title").value.trim();
  const body = $("note-body").value;
  if (!title) {
    setStatus("notes-status", "A note needs a title.", "bad");
    return;
  }
  notesAction("POST /notes", (s) =>
    s.fetch("/notes", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title, body }),
    }),
  ).then(() => {
    $("note-title").value = "";
    $("note-body").value = "";
  });
});

$("notes-refresh").addEventListener("click", () => notesAction("GET /notes", (s) => s.fetch("/notes")));

// ---------------------------------------------------------------- 5. events

let stopEvents = null;

function timelineRow(kind, at, text, bytes) {
  const li = el("li", kind);
  li.dataset.kind = kind;
  li.dataset.at = at.toFixed(1);
  li.append(el("span", "at", `+${at.toFixed(0)} ms`), el("span", "kind", kind === "event" ? "event " : "sealed chunk "));
  if (text) li.append(el("code", null, text));
  if (bytes) li.append(bytesView(bytes, "sealed"));
  $("events-list").append(li);
}

$("events-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const n = Number($("events-n").value);
  const interval = Number($("events-interval").value);
  if (!(n >= 1 && n <= 50) || !(interval >= 50 && interval <= 5000)) {
    setStatus("events-status", "Events must be 1–50 and the interval 50–5000 ms.", "bad");
    return;
  }
  $("events-list").replaceChildren();
  $("events-start").disabled = true;
  $("events-stop").disabled = false;
  const ctrl = new AbortController();
  stopEvents = () => ctrl.abort();
  let t0 = performance.now();
  let count = 0;
  let s = null;
  let recording = false; // only the event stream's own response, not the handshake or close
  try {
    setStatus("events-status", "Handshaking (this panel's own session) …");
    s = await connect(BASE, {
      pin: PIN,
      onWire: (e) => {
        if (!recording) return;
        if (e.kind === "response") {
          const what = e.streamed ? "first part of the stream" : "one record";
          timelineRow("chunk", performance.now() - t0, `HTTP ${e.status}, ${what}`, e.bytes);
        } else if (e.kind === "response-chunk") {
          timelineRow("chunk", performance.now() - t0, "", e.bytes);
        }
      },
    });
    setStatus("events-status", `Session ${s.id}: receiving …`);
    t0 = performance.now();
    recording = true;
    for await (const e of s.events(`/events?n=${n}&interval_ms=${interval}`, { signal: ctrl.signal })) {
      count += 1;
      timelineRow("event", performance.now() - t0, `${e.event && e.event !== "message" ? e.event + " " : ""}data: ${e.data}`);
    }
    setStatus("events-status", `${count} events in ${(performance.now() - t0).toFixed(0)} ms, each opened as its chunk arrived.`, "ok");
  } catch (e) {
    if (ctrl.signal.aborted) {
      setStatus("events-status", `Stopped after ${count} events.`);
    } else {
      setStatus("events-status", describeError(e), "bad");
    }
  } finally {
    recording = false;
    stopEvents = null;
    $("events-start").disabled = false;
    $("events-stop").disabled = true;
    if (s) s.close().catch(() => {});
  }
});

$("events-stop").addEventListener("click", () => stopEvents && stopEvents());

// Ready: the page's own script ran (the browser tests wait for this mark).
document.documentElement.dataset.ready = "true";

// Leaving the page ends its sessions on the server instead of leaving them to expire.
addEventListener("pagehide", () => {
  session?.close().catch(() => {});
});
