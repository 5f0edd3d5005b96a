// What the web interface and the webmail share: building elements, the status line, and
// calls to the JSON API with the session's CSRF token. Each page defines `state` (with `csrf`)
// and `loggedOut(why)`, called when the session is gone.
"use strict";

// Builds an element; strings become text (never markup).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function say(text, kind) {
  const s = document.getElementById("status");
  s.textContent = text || "";
  s.className = kind || "";
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  if (method !== "GET" && state.csrf) opts.headers["X-CSRF-Token"] = state.csrf;
  const r = await fetch("/api/v1" + path, opts);
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  if (!r.ok) {
    const why = (data && data.error) || r.statusText;
    if (r.status === 401 && path !== "/session") loggedOut(why);
    throw new Error(why);
  }
  return data;
}

// Runs an action, reporting its outcome; returns its result (undefined on failure).
async function act(what, fn) {
  say(what + "…");
  try {
    const r = await fn();
    say((r && r.message) || "Done.", "done");
    return r || true;
  } catch (e) {
    say(e.message, "error");
    return undefined;
  }
}
