// Postern's webmail: read and write mail in a browser. It speaks only the JSON API
// (/api/v1/me/mail), with the session cookie and the session's CSRF token; a message's HTML is
// shown in a sandboxed frame served with its own policy, never put into this page.
"use strict";

const state = {
  address: null, csrf: null, folders: [], folder: null, page: null, offset: 0,
  sort: "date", asc: false, threads: false, search: null, selected: new Set(),
  current: null, events: null,
};
const PAGE = 50;

// The session is gone: log in again.
function loggedOut(why) {
  showLogin(why);
}

function bytes(n) {
  const u = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function when(secs) {
  const d = new Date(secs * 1000);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString();
}

function person(p) {
  if (!p) return "";
  return p.name ? `${p.name} <${p.address}>` : p.address;
}

// --- login ---------------------------------------------------------------------------------

function showLogin(why) {
  state.address = null;
  if (state.events) { state.events.close(); state.events = null; }
  document.getElementById("links").hidden = true;
  document.getElementById("search").hidden = true;
  document.getElementById("who").textContent = "";
  const address = el("input", { id: "login-address", type: "email", autocomplete: "username", required: true });
  const password = el("input", { id: "login-password", type: "password", autocomplete: "current-password", required: true });
  const form = el("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    const r = await act("Logging in", () => api("POST", "/session", { address: address.value, password: password.value }));
    if (r) { state.csrf = r.csrf; state.address = r.address; say(""); start(); }
  } },
  el("h1", {}, "Log in to your mail"),
  el("label", {}, "Email address", address),
  el("label", {}, "Password", password),
  el("button", { type: "submit", id: "login-submit" }, "Log in"));
  document.getElementById("main").replaceChildren(form);
  if (why) say(why, "error");
  address.focus();
}

async function logout() {
  await act("Logging out", () => api("DELETE", "/session"));
  showLogin();
}

// --- layout --------------------------------------------------------------------------------

function start() {
  document.getElementById("who").textContent = state.address;
  document.getElementById("links").hidden = false;
  document.getElementById("search").hidden = false;
  document.getElementById("menu").hidden = false;
  document.getElementById("main").replaceChildren(
    el("aside", { id: "folders", "aria-label": "Folders" }),
    el("section", { id: "list", "aria-label": "Messages" }),
    el("article", { id: "reader", "aria-live": "polite" }));
  listen();
  loadFolders().then(() => openFolder(inboxId()));
}

function inboxId() {
  const i = state.folders.find((f) => f.name === "INBOX") || state.folders[0];
  return i ? i.id : null;
}

function folderLabel(f) {
  const names = { drafts: "Drafts", sent: "Sent", trash: "Trash", junk: "Junk", archive: "Archive" };
  if (f.name === "INBOX") return "Inbox";
  return f.special_use ? names[f.special_use] : f.name;
}

async function loadFolders() {
  const r = await api("GET", "/me/mail/folders");
  state.folders = r.folders;
  drawFolders();
}

function drawFolders() {
  const box = document.getElementById("folders");
  if (!box) return;
  const items = state.folders.map((f) => {
    const depth = f.special_use || f.name === "INBOX" ? 0 : f.name.split("/").length - 1;
    const label = f.special_use || f.name === "INBOX" ? folderLabel(f) : f.name.split("/").pop();
    return el("li", {},
      el("a", { href: "#", "data-folder": f.id, style: null, "aria-current": state.folder && state.folder.id === f.id ? "page" : null,
        onclick: (e) => { e.preventDefault(); openFolder(f.id); } },
      el("span", { class: "name" }, "\u00a0\u00a0".repeat(depth), label),
      f.unseen ? el("span", { class: "count", title: "unread" }, f.unseen) : ""));
  });
  box.replaceChildren(
    el("button", { type: "button", id: "compose", onclick: () => compose({}) }, "Write"),
    el("ul", {}, items),
    el("div", { class: "tools" },
      el("button", { type: "button", class: "quiet", id: "folder-new", onclick: newFolder }, "New folder"),
      el("button", { type: "button", class: "quiet", id: "folder-rename", onclick: renameFolder }, "Rename"),
      el("button", { type: "button", class: "danger", id: "folder-delete", onclick: deleteFolder }, "Delete")),
    el("p", { class: "keys" }, "Keys: j/k next/previous, o open, c write, r reply, a reply all, f forward, s flag, u unread, # delete, ! junk, / search"));
}

async function newFolder() {
  const name = prompt("Name of the new folder (use / for a folder inside another):");
  if (!name) return;
  if (await act("Creating " + name, () => api("POST", "/me/mail/folders", { name }))) loadFolders();
}

async function renameFolder() {
  const f = state.folder;
  if (!f) return;
  const name = prompt("New name of " + f.name + ":", f.name);
  if (!name || name === f.name) return;
  if (await act("Renaming", () => api("PUT", "/me/mail/folders/" + f.id, { name }))) loadFolders();
}

async function deleteFolder() {
  const f = state.folder;
  if (!f || !confirm("Delete the folder " + f.name + " and the messages in it?")) return;
  if (await act("Deleting " + f.name, () => api("DELETE", "/me/mail/folders/" + f.id))) {
    await loadFolders();
    openFolder(inboxId());
  }
}

// --- the message list ----------------------------------------------------------------------

async function openFolder(id, keepPage) {
  if (id === null || id === undefined) return;
  state.folder = state.folders.find((f) => f.id === id) || { id };
  if (!keepPage) { state.offset = 0; state.selected.clear(); state.search = null; }
  drawFolders();
  if (window.matchMedia("(max-width: 800px)").matches) document.getElementById("folders").classList.add("closed");
  await loadList();
}

function listQuery() {
  const q = new URLSearchParams({ sort: state.sort, offset: state.offset, limit: PAGE });
  if (state.asc) q.set("asc", "true");
  if (state.threads) q.set("threads", "true");
  for (const [k, v] of Object.entries(state.search || {})) if (v) q.set(k, v);
  return q;
}

async function loadList() {
  if (!state.folder) return;
  const r = await api("GET", `/me/mail/folders/${state.folder.id}/messages?` + listQuery());
  state.page = r;
  drawList();
}

function drawList() {
  const box = document.getElementById("list");
  const r = state.page;
  if (!box || !r) return;
  let rows = r.messages;
  const depth = new Map();
  if (state.threads) {
    // Conversations on this page together, in the order of their newest message.
    const groups = new Map();
    for (const m of rows) {
      const k = m.thread.toLowerCase();
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(m);
    }
    rows = [];
    for (const g of groups.values()) g.forEach((m, i) => { rows.push(m); depth.set(m.uid, i > 0); });
  }
  const sent = state.folder && (state.folder.special_use === "sent" || state.folder.special_use === "drafts");
  const items = rows.map((m) => {
    const who = sent ? (m.to || []).map((p) => p.name || p.address).join(", ") : (m.from.name || m.from.address);
    const box = el("input", { type: "checkbox", "aria-label": "select", checked: state.selected.has(m.uid),
      onclick: (e) => { e.stopPropagation(); toggle(m.uid, e.target.checked); } });
    return el("li", { "data-uid": m.uid, class: [m.flags.seen ? "" : "unread", state.current && state.current.uid === m.uid ? "current" : "", depth.get(m.uid) ? "threaded" : ""].join(" ").trim(),
      onclick: () => openMessage(m.uid) },
    box,
    el("span", { class: "who" }, who || "(nobody)"),
    el("span", { class: "when", title: new Date(m.date * 1000).toString() }, when(m.date), " · ", bytes(m.size)),
    el("span", { class: "marks" }, m.flags.flagged ? "★" : "", m.attachments ? "📎" : "", m.flags.answered ? "↩" : ""),
    el("span", { class: "subject" }, m.subject || "(no subject)"),
    el("span", { class: "preview" }, m.preview));
  });
  const sort = el("select", { id: "sort", "aria-label": "Sort by", onchange: (e) => { state.sort = e.target.value; state.offset = 0; loadList(); } },
    ...[["date", "Date"], ["from", "Sender"], ["subject", "Subject"], ["size", "Size"]].map(([v, l]) =>
      el("option", { value: v, selected: state.sort === v }, l)));
  const moveTo = el("select", { id: "move-to", "aria-label": "Move to", onchange: (e) => { if (e.target.value) actOn(state.selected, "move", Number(e.target.value)); } },
    el("option", { value: "" }, "Move to…"),
    ...state.folders.filter((f) => !state.folder || f.id !== state.folder.id).map((f) => el("option", { value: f.id }, folderLabel(f))));
  const first = r.total ? r.offset + 1 : 0;
  const last = Math.min(r.offset + r.messages.length, r.total);
  box.replaceChildren(
    el("div", { class: "bar" },
      el("input", { type: "checkbox", id: "select-all", "aria-label": "select all", onclick: (e) => { for (const m of r.messages) toggle(m.uid, e.target.checked); drawList(); } }),
      el("button", { type: "button", class: "quiet", id: "mark-read", onclick: () => actOn(state.selected, "seen") }, "Read"),
      el("button", { type: "button", class: "quiet", id: "mark-unread", onclick: () => actOn(state.selected, "unseen") }, "Unread"),
      el("button", { type: "button", class: "quiet", id: "mark-flag", onclick: () => actOn(state.selected, "flag") }, "Flag"),
      el("button", { type: "button", class: "danger", id: "delete", onclick: () => actOn(state.selected, "delete") }, "Delete"),
      el("button", { type: "button", class: "quiet", id: "junk", onclick: () => actOn(state.selected, state.folder.special_use === "junk" ? "notjunk" : "junk") },
        state.folder && state.folder.special_use === "junk" ? "Not junk" : "Junk"),
      moveTo, sort,
      el("button", { type: "button", class: "quiet", id: "order", title: "order", onclick: () => { state.asc = !state.asc; loadList(); } }, state.asc ? "↑" : "↓"),
      el("label", { class: "inline" }, el("input", { type: "checkbox", id: "threads", checked: state.threads, onclick: (e) => { state.threads = e.target.checked; state.offset = 0; loadList(); } }), "Threads")),
    state.search ? el("div", { class: "notice", id: "search-results" }, `Search results: ${r.total}`,
      el("button", { type: "button", class: "quiet", onclick: () => { state.search = null; state.offset = 0; loadList(); } }, "Show all")) : "",
    el("ul", { id: "rows" }, items.length ? items : el("li", { class: "empty" }, "No messages")),
    el("div", { class: "pages" },
      el("button", { type: "button", class: "quiet", id: "newer", disabled: r.offset === 0, onclick: () => { state.offset = Math.max(0, r.offset - PAGE); loadList(); } }, "‹"),
      el("span", { id: "range" }, `${first}–${last} of ${r.total}`),
      el("button", { type: "button", class: "quiet", id: "older", disabled: last >= r.total, onclick: () => { state.offset = r.offset + PAGE; loadList(); } }, "›")));
}

function toggle(uid, on) {
  if (on) state.selected.add(uid); else state.selected.delete(uid);
}

async function actOn(uids, action, to) {
  const list = [...uids];
  if (!list.length) { say("Select one or more messages first.", "error"); return; }
  const body = { uids: list, action };
  if (to !== undefined) body.to = to;
  const r = await act("Working", () => api("POST", `/me/mail/folders/${state.folder.id}/actions`, body));
  if (!r) return;
  say(`${r.changed} message(s): ${action}`, "done");
  if (["move", "delete", "junk", "notjunk"].includes(action)) {
    for (const u of list) state.selected.delete(u);
    if (state.current && list.includes(state.current.uid)) { state.current = null; document.getElementById("reader").replaceChildren(); }
  }
  await Promise.all([loadFolders(), loadList()]);
}

// --- reading -------------------------------------------------------------------------------

function checksLine(r) {
  if (!r.checks.length) return "";
  const words = { pass: "passed", fail: "failed", softfail: "failed softly", none: "not used", neutral: "neutral", temperror: "could not be checked", permerror: "is broken", policy: "failed the policy" };
  const names = { spf: "SPF (sending server)", dkim: "DKIM (signature)", dmarc: "DMARC (sender's domain)" };
  const parts = r.checks.map((c) => `${names[c.method] || c.method} ${words[c.result] || c.result}`);
  return el("p", { class: "checks" + (r.checks_failed ? " bad" : ""), id: "checks" },
    r.checks_failed ? "Warning: this message may not come from whom it claims. " : "Sender checks: ", parts.join("; ") + ".");
}

function base(r) {
  return `/me/mail/folders/${r.folder}/messages/${r.uid}`;
}

async function openMessage(uid, images) {
  const r = await api("GET", `/me/mail/folders/${state.folder.id}/messages/${uid}`);
  state.current = r;
  const m = r.message;
  const reader = document.getElementById("reader");
  const dl = el("dl", { class: "head" },
    el("dt", {}, "From"), el("dd", { id: "from" }, m.from.map(person).join(", ")),
    el("dt", {}, "To"), el("dd", {}, m.to.map(person).join(", ")),
    m.cc.length ? [el("dt", {}, "Cc"), el("dd", {}, m.cc.map(person).join(", "))] : "",
    el("dt", {}, "Date"), el("dd", {}, new Date((m.date || r.arrived) * 1000).toString()));
  let body;
  if (r.images_trusted) images = true;
  if (r.has_html) {
    const q = images ? "?images=true" : "";
    body = el("iframe", { id: "html", title: "message", sandbox: "allow-same-origin allow-popups allow-popups-to-escape-sandbox", referrerpolicy: "no-referrer",
      src: "/api/v1" + base(r) + "/html" + q });
  } else {
    body = el("pre", { class: "text", id: "text" }, m.text);
  }
  const atts = m.attachments.filter((a) => !a.inline);
  reader.replaceChildren(
    el("button", { type: "button", class: "quiet", id: "back", onclick: () => { state.current = null; reader.replaceChildren(); drawList(); } }, "← Back"),
    el("h1", { id: "subject" }, m.subject || "(no subject)"),
    dl,
    checksLine(r),
    el("div", { class: "actions" },
      el("button", { type: "button", id: "reply", onclick: () => reply(false) }, "Reply"),
      el("button", { type: "button", class: "quiet", id: "reply-all", onclick: () => reply(true) }, "Reply all"),
      el("button", { type: "button", class: "quiet", id: "forward", onclick: () => forward(false) }, "Forward"),
      el("button", { type: "button", class: "quiet", id: "forward-attached", onclick: () => forward(true) }, "Forward as attachment"),
      el("button", { type: "button", class: "quiet", id: "flag", onclick: () => actOn([r.uid], r.flags.flagged ? "unflag" : "flag") }, r.flags.flagged ? "Unflag" : "Flag"),
      el("button", { type: "button", class: "quiet", id: "unread", onclick: () => actOn([r.uid], "unseen") }, "Mark unread"),
      el("button", { type: "button", class: "danger", id: "delete-one", onclick: () => actOn([r.uid], "delete") }, "Delete"),
      el("button", { type: "button", class: "quiet", id: "source", onclick: () => showSource(r) }, "Source"),
      state.folder && state.folder.special_use === "drafts" ? el("button", { type: "button", id: "edit-draft", onclick: editDraft }, "Edit") : ""),
    r.remote_images && !images ? el("p", { class: "notice", id: "images-blocked" }, `${r.remote_images} remote image(s) blocked to protect your privacy.`,
      el("button", { type: "button", class: "quiet", id: "show-images", onclick: () => openMessage(uid, true) }, "Show them"),
      m.from.length ? el("button", { type: "button", class: "quiet", id: "trust-images", onclick: async () => {
        if (await act("Allowing", () => api("POST", "/me/mail/image-senders", { address: m.from[0].address }))) openMessage(uid, true);
      } }, "Always show images from " + m.from[0].address) : "") : "",
    atts.length ? el("ul", { class: "attachments", id: "attachments" }, atts.map((a) =>
      el("li", {}, el("a", { href: "/api/v1" + base(r) + "/parts/" + a.part, download: a.name }, `📎 ${a.name} (${bytes(a.size)})`)))) : "",
    body);
  loadFolders();
  if (state.page) {
    const line = state.page.messages.find((x) => x.uid === uid);
    if (line) line.flags.seen = true;
    drawList();
  }
}

async function showSource(r) {
  const res = await fetch("/api/v1" + base(r) + "/raw", { credentials: "same-origin" });
  const text = await res.text();
  const reader = document.getElementById("reader");
  const old = document.getElementById("raw");
  if (old) { old.remove(); return; }
  reader.append(el("pre", { class: "source", id: "raw" }, text));
}

// --- moving around -------------------------------------------------------------------------

function neighbour(step) {
  const rows = [...document.querySelectorAll("#rows li[data-uid]")];
  if (!rows.length) return;
  const at = state.current ? rows.findIndex((li) => Number(li.dataset.uid) === state.current.uid) : -1;
  const next = rows[Math.min(rows.length - 1, Math.max(0, at + step))];
  if (next) openMessage(Number(next.dataset.uid));
}

document.addEventListener("keydown", (e) => {
  if (!state.address || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
  const cur = state.current;
  const keys = {
    j: () => neighbour(1), k: () => neighbour(-1),
    o: () => { if (!cur) neighbour(0); },
    c: () => compose({}),
    r: () => cur && reply(false), a: () => cur && reply(true), f: () => cur && forward(false),
    s: () => cur && actOn([cur.uid], cur.flags.flagged ? "unflag" : "flag"),
    u: () => cur && actOn([cur.uid], "unseen"),
    "#": () => actOn(state.selected.size ? state.selected : (cur ? [cur.uid] : []), "delete"),
    "!": () => actOn(state.selected.size ? state.selected : (cur ? [cur.uid] : []), "junk"),
    "/": () => document.getElementById("q").focus(),
  };
  const f = keys[e.key];
  if (f) { e.preventDefault(); f(); }
});

document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const v = (id) => document.getElementById(id).value.trim();
  const s = { from: v("q-from"), subject: v("q-subject"), body: v("q-body"), since: v("q-since"), before: v("q-before") };
  // The one box looks in the subject; the others narrow it.
  if (v("q") && !s.subject) s.subject = v("q");
  state.search = Object.values(s).some(Boolean) ? s : null;
  state.offset = 0;
  document.getElementById("more-search").open = false;
  loadList().catch((err) => say(err.message, "error"));
});

document.getElementById("logout").addEventListener("click", (e) => { e.preventDefault(); logout(); });
document.getElementById("menu").addEventListener("click", () => document.getElementById("folders").classList.toggle("closed"));

// --- live updates --------------------------------------------------------------------------

function listen() {
  if (state.events) state.events.close();
  const es = new EventSource("/api/v1/me/mail/events");
  state.events = es;
  let pending = null;
  const refresh = (folder) => {
    // Events come in bursts: one refresh for a burst.
    clearTimeout(pending);
    pending = setTimeout(() => {
      loadFolders().catch(() => {});
      if (state.folder && (folder === undefined || folder === state.folder.id)) loadList().catch(() => {});
    }, 150);
  };
  es.addEventListener("mailbox", (e) => { try { refresh(JSON.parse(e.data).folder); } catch (_) { refresh(); } });
  es.addEventListener("folders", () => refresh());
}

// --- writing -------------------------------------------------------------------------------

function quote(m) {
  const who = m.from.map(person).join(", ");
  const when = new Date((m.date || 0) * 1000).toString();
  return `\n\nOn ${when}, ${who} wrote:\n` + m.text.split(/\r?\n/).map((l) => "> " + l).join("\n") + "\n";
}

function prefixed(p, subject) {
  const s = subject || "";
  return s.toLowerCase().startsWith(p.toLowerCase()) ? s : `${p} ${s}`;
}

function reply(all) {
  const r = state.current;
  if (!r) return;
  const m = r.message;
  const to = (m.reply_to.length ? m.reply_to : m.from).map(person);
  let cc = [];
  if (all) {
    const mine = state.address.toLowerCase();
    const others = m.to.concat(m.cc).filter((p) => p.address.toLowerCase() !== mine);
    cc = others.map(person).filter((p) => !to.includes(p));
  }
  compose({ to: to.join(", "), cc: cc.join(", "), subject: prefixed("Re:", m.subject), text: quote(m),
    reply_to: { folder: r.folder, uid: r.uid } });
}

function forward(attached) {
  const r = state.current;
  if (!r) return;
  const m = r.message;
  const opts = { subject: prefixed("Fwd:", m.subject) };
  if (attached) opts.attach = { folder: r.folder, uid: r.uid };
  else if (m.attachments.some((a) => !a.inline)) opts.files_of = { folder: r.folder, uid: r.uid };
  if (!attached) opts.text = "\n\n---------- Forwarded message ----------\n" +
    `From: ${m.from.map(person).join(", ")}\nDate: ${new Date((m.date || 0) * 1000).toString()}\n` +
    `Subject: ${m.subject}\nTo: ${m.to.map(person).join(", ")}\n\n` + m.text;
  compose(opts);
}

function editDraft() {
  const r = state.current;
  const m = r.message;
  compose({ to: m.to.map(person).join(", "), cc: m.cc.map(person).join(", "), subject: m.subject, text: m.text, draft: r.uid });
}

function readFile(f) {
  return new Promise((resolve, reject) => {
    const rd = new FileReader();
    rd.onload = () => resolve({ name: f.name, type: f.type || "application/octet-stream", data: String(rd.result).split(",")[1] || "", size: f.size });
    rd.onerror = () => reject(rd.error);
    rd.readAsDataURL(f);
  });
}

function compose(opts) {
  opts = opts || {};
  const reader = document.getElementById("reader");
  const draft = { uid: opts.draft || null, timer: null, dirty: false };
  const field = (id, label, value) => el("label", {}, label, el("input", { id, name: id, value: value || "", autocomplete: "off" }));
  const to = field("to", "To", opts.to), cc = field("cc", "Cc", opts.cc), bcc = field("bcc", "Bcc", "");
  const subject = field("subject-field", "Subject", opts.subject);
  const text = el("textarea", { id: "body", "aria-label": "Message" });
  text.value = opts.text || "";
  const rich = el("div", { id: "rich", class: "rich", contenteditable: "true", role: "textbox", "aria-label": "Formatted message", hidden: true });
  const suggest = el("ul", { id: "suggest", hidden: true });
  const files = [];
  const fileList = el("ul", { class: "attachments", id: "uploads" });
  const formatting = el("input", { type: "checkbox", id: "formatting", onclick: () => {
    if (formatting.checked) { rich.textContent = text.value; rich.hidden = false; text.hidden = true; tools.hidden = false; }
    else { text.value = rich.innerText; rich.hidden = true; text.hidden = false; tools.hidden = true; }
  } });
  const cmd = (c, label) => el("button", { type: "button", class: "quiet", onclick: () => { document.execCommand(c); rich.focus(); } }, label);
  const tools = el("div", { class: "row", hidden: true }, cmd("bold", "B"), cmd("italic", "I"), cmd("insertUnorderedList", "• List"));
  const body = () => {
    const b = { to: [to.lastChild.value], cc: [cc.lastChild.value], bcc: [bcc.lastChild.value], subject: subject.lastChild.value,
      attachments: files.map((f) => ({ name: f.name, type: f.type, data: f.data })) };
    if (formatting.checked) { b.text = rich.innerText; b.html = rich.innerHTML; } else b.text = text.value;
    if (opts.reply_to) b.reply_to = opts.reply_to;
    if (opts.attach) b.attach = opts.attach;
    if (opts.files_of) b.files_of = opts.files_of;
    if (draft.uid) b.draft = draft.uid;
    return b;
  };
  const save = async () => {
    draft.dirty = false;
    try {
      const r = await api("POST", "/me/mail/drafts", body());
      draft.uid = r.uid;
      document.getElementById("draft-state").textContent = "Draft saved " + new Date().toLocaleTimeString();
    } catch (e) { say(e.message, "error"); }
  };
  const changed = () => {
    draft.dirty = true;
    clearTimeout(draft.timer);
    draft.timer = setTimeout(save, 2000);
  };
  // Completion from the addresses written to before.
  const complete = async (input) => {
    const parts = input.value.split(",");
    const last = parts[parts.length - 1].trim();
    if (last.length < 1) { suggest.hidden = true; return; }
    const r = await api("GET", "/me/mail/contacts?q=" + encodeURIComponent(last));
    suggest.replaceChildren(...r.addresses.map((a) => el("li", { onclick: () => {
      parts[parts.length - 1] = " " + a;
      input.value = parts.join(",").trim() + ", ";
      suggest.hidden = true; input.focus(); changed();
    } }, a)));
    suggest.hidden = !r.addresses.length;
    input.parentElement.after(suggest);
  };
  for (const f of [to, cc, bcc]) f.lastChild.addEventListener("input", (e) => { changed(); complete(e.target).catch(() => {}); });
  for (const f of [subject.lastChild, text, rich]) f.addEventListener("input", changed);
  const picker = el("input", { type: "file", id: "files", multiple: true, "aria-label": "Attach files", onchange: async (e) => {
    for (const f of e.target.files) {
      const x = await readFile(f);
      files.push(x);
      fileList.append(el("li", {}, `📎 ${x.name} (${bytes(x.size)})`));
    }
    e.target.value = "";
    changed();
  } });
  const form = el("form", { class: "compose", id: "compose-form", onsubmit: async (e) => {
    e.preventDefault();
    clearTimeout(draft.timer);
    const r = await act("Sending", () => api("POST", "/me/mail/send", body()));
    if (r) {
      draft.uid = null;
      reader.replaceChildren(el("p", { id: "sent" }, r.message));
      loadFolders(); loadList();
    }
  } },
  el("h1", {}, opts.reply_to ? "Reply" : opts.attach || (opts.subject || "").startsWith("Fwd:") ? "Forward" : "New message"),
  el("p", { class: "keys" }, "From ", state.address),
  to, cc, bcc, subject,
  el("label", { class: "inline" }, formatting, "Formatting"), tools,
  text, rich,
  opts.attach ? el("p", {}, "📎 the message, attached whole") : "",
  opts.files_of ? el("p", { id: "files-along" }, "📎 its attachments go along") : "",
  el("div", { class: "row" }, picker), fileList,
  el("div", { class: "row" },
    el("button", { type: "submit", id: "send" }, "Send"),
    el("button", { type: "button", class: "quiet", id: "save-draft", onclick: save }, "Save draft"),
    el("button", { type: "button", class: "danger", id: "discard", onclick: () => { clearTimeout(draft.timer); reader.replaceChildren(); } }, "Discard"),
    el("span", { id: "draft-state", class: "keys" })));
  reader.replaceChildren(form);
  (opts.to ? text : to.lastChild).focus();
  if (opts.reply_to || opts.attach || opts.text) text.setSelectionRange(0, 0);
}

// --- start ---------------------------------------------------------------------------------

(async () => {
  try {
    const r = await fetch("/api/v1/session", { credentials: "same-origin" });
    if (r.ok) {
      const s = await r.json();
      state.address = s.address; state.csrf = s.csrf;
      start();
      return;
    }
  } catch (_) { /* not logged in */ }
  showLogin();
})();
