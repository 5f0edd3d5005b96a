// Postern's web interface: administrators manage the server, every user their own account.
// It speaks only the JSON API (/api/v1), with a session cookie and the session's CSRF token.
"use strict";

const state = { address: null, admin: false, csrf: null };

// The session is gone: log in again.
function loggedOut(why) {
  state.address = null;
  showLogin(why);
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function parseSize(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*$/i.exec(s || "");
  if (!m) return null;
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase()];
  return Math.round(parseFloat(m[1]) * mult);
}

function ago(secs) {
  if (secs < 90) return secs + " s";
  if (secs < 5400) return Math.round(secs / 60) + " min";
  if (secs < 172800) return Math.round(secs / 3600) + " h";
  return Math.round(secs / 86400) + " days";
}

function when(unix) {
  return new Date(unix * 1000).toLocaleString();
}

function sum(map) {
  return Object.values(map || {}).reduce((a, b) => a + b, 0);
}

function view(title, ...content) {
  const main = document.getElementById("main");
  main.replaceChildren(el("h1", {}, title), ...content);
  document.title = title + " — Postern";
  main.focus();
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

function field(label, attrs) {
  return el("label", {}, label, el("input", attrs));
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// --- login ---------------------------------------------------------------------------------

function showLogin(why) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").textContent = "";
  const form = el("form", { class: "stack", id: "login", onsubmit: login },
    field("Email address", { name: "address", type: "email", autocomplete: "username", required: true, id: "login-address" }),
    field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true, id: "login-password" }),
    el("button", { type: "submit" }, "Log in"));
  view("Log in", el("p", {}, "Log in with your full email address and the password of your mail account."), form);
  if (why) say(why, "error");
  document.getElementById("login-address").focus();
}

async function login(ev) {
  ev.preventDefault();
  const v = formValues(ev.target);
  say("Logging in…");
  try {
    const s = await api("POST", "/session", { address: v.address, password: v.password });
    Object.assign(state, s);
    say("");
    start();
  } catch (e) {
    say(e.message, "error");
  }
}

async function logout() {
  await act("Logging out", () => api("DELETE", "/session"));
  state.address = state.csrf = null;
  state.admin = false;
  location.hash = "";
  showLogin();
  say("Logged out.", "done");
}

// --- navigation ----------------------------------------------------------------------------

const ADMIN_PAGES = [
  ["dashboard", "Dashboard", dashboard],
  ["domains", "Domains", domains],
  ["users", "Users", users],
  ["aliases", "Aliases & groups", aliases],
  ["sharing", "Shared mailboxes", sharing],
  ["queue", "Queue", queue],
  ["trace", "Message trace", trace],
  ["reports", "Reports", reports],
  ["settings", "Settings", settings],
];
const USER_PAGES = [["account", "My account", account]];

function pages() {
  return state.admin ? ADMIN_PAGES.concat(USER_PAGES) : USER_PAGES;
}

function start() {
  const nav = document.getElementById("nav");
  nav.replaceChildren(
    ...pages().map(([id, label]) => el("a", { href: "#" + id, id: "nav-" + id }, label)),
    el("a", { href: "#", id: "nav-logout", onclick: (e) => { e.preventDefault(); logout(); } }, "Log out"));
  nav.hidden = false;
  document.getElementById("who").textContent = state.address + (state.admin ? " (administrator)" : "");
  route();
}

function route() {
  if (!state.address) return;
  const id = location.hash.slice(1).split("/")[0];
  const all = pages();
  const page = all.find(([p]) => p === id) || all[0];
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#" + page[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  page[2]().catch((e) => say(e.message, "error"));
}

window.addEventListener("hashchange", route);

// --- admin pages ---------------------------------------------------------------------------

async function dashboard() {
  const d = await api("GET", "/dashboard");
  const q = d.queue || { messages: 0, oldest_secs: 0, retrying: 0 };
  const card = (n, l, id) => el("div", { class: "card", id }, el("div", { class: "n" }, n), el("div", { class: "l" }, l));
  const out = d.outbound || {};
  const doctorOut = el("div", { id: "doctor" });
  const charts = el("div", { id: "charts" });
  view("Dashboard",
    el("p", { class: "muted" }, `${d.hostname}: counts since the server started (${when(d.started)}).`),
    el("div", { class: "cards" },
      card(d.messages_today ?? "—", "messages today (UTC)", "card-today"),
      card(sum(d.received), "received", "card-received"),
      card(d.delivered_local, "stored in mailboxes", "card-local"),
      card(out.delivered || 0, "sent to other servers", "card-sent"),
      card(out.deferred || 0, "deferred (will retry)", "card-deferred"),
      card(out.bounced || 0, "bounced", "card-bounced"),
      card(sum(d.refused), "refused", "card-refused"),
      card(sum(d.auth_failures), "failed logins", "card-auth"),
      card(q.messages, q.messages ? `queued, oldest ${ago(q.oldest_secs)}` : "queued", "card-queue"),
      card(d.disk ? bytes(d.disk.free_bytes) : "—", d.disk ? `free of ${bytes(d.disk.total_bytes)}` : "disk", "card-disk")),
    el("h2", {}, "Over time"),
    el("div", { class: "ranges", role: "group", "aria-label": "Range" }, RANGES.map(([r, label]) =>
      el("button", { type: "button", id: "range-" + r, class: "quiet", onclick: () => drawStats(r, charts) }, label))),
    charts,
    el("h2", {}, "Doctor"),
    el("p", {}, "Checks this server as the internet sees it: listeners, certificate, DNS, relaying, port 25, blocklists."),
    el("button", { type: "button", id: "run-doctor", onclick: () => runDoctor(doctorOut) }, "Run the doctor"),
    doctorOut);
  await drawStats("24h", charts);
}

const RANGES = [["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"], ["1y", "1 year"]];
const CHARTS = [
  ["flow", "Mail flow", null],
  ["refused", "Refused, by reason", null],
  ["verdicts", "Junk and DMARC failures", null],
  ["queue", "Queue", null],
  ["logins", "Failed logins, by protocol", null],
  ["latency", "Latency (ms)", (v) => v + " ms"],
  ["disk", "Disk used", bytes],
  ["domains", "Messages per domain (in: stored for it; out: sent by its users)", null],
];
const SERIES_LABELS = {
  "received:mx": "received from other servers", "received:submission": "sent by users", "stored": "stored in mailboxes",
  "outbound:delivered": "delivered to other servers", "outbound:deferred": "deferred", "outbound:bounced": "bounced",
  "queue:messages": "messages queued", "queue:oldest_secs": "oldest (seconds)", "disk:used_bytes": "used",
  "verdict:junk": "put in Junk", "verdict:dmarc_fail": "failed DMARC",
};

function seriesLabel(name) {
  if (SERIES_LABELS[name]) return SERIES_LABELS[name];
  const [kind, ...rest] = name.split(":");
  if (kind === "latency") return (rest[0] === "smtp_accept" ? "accepting" : "delivering") + " " + rest[1].replace("_ms", "");
  if (kind === "domain") return rest[1] + " " + rest[0];
  return rest.join(":") || name;
}

function traceLink(kind, value) {
  return el("a", { href: "#trace/" + new URLSearchParams({ [kind]: value }).toString() }, value);
}

async function drawStats(range, out) {
  for (const [r] of RANGES) document.getElementById("range-" + r)?.setAttribute("aria-pressed", String(r === range));
  const r = await api("GET", "/stats?range=" + range + "&top_hours=24");
  const rep = r.report;
  const boxes = CHARTS.map(([group, title, unit]) => {
    const series = rep.series.filter((s) => s.group === group).map((s) => ({ ...s, label: seriesLabel(s.name) }));
    if (!series.length) return el("section", { id: "chart-" + group, class: "chart-box" }, el("h3", {}, title), el("p", { class: "muted" }, "Nothing counted in this time."));
    return lineChart("chart-" + group, title, rep.starts, series, rep.step, unit);
  });
  const t = rep.top;
  const list = (title, kind, rows) => el("section", { class: "top" }, el("h3", {}, title),
    table(["Messages", title], rows.map(([k, n]) => [String(n), kind ? traceLink(kind, k) : k]), "None."));
  out.replaceChildren(el("div", { class: "charts" }, boxes),
    t ? el("div", { id: "top" }, el("h2", {}, `The last ${t.hours} hours`),
      el("div", { class: "tops" }, list("Top senders", "from", t.senders), list("Top recipients", "to", t.recipients),
        list("Top remote hosts", null, t.hosts))) : null);
}

async function runDoctor(out) {
  out.replaceChildren(el("p", {}, "Running… this can take a minute."));
  const r = await act("Running the doctor", () => api("GET", "/doctor"));
  if (!r) { out.replaceChildren(); return; }
  say(r.ok ? "The doctor found no failure." : `The doctor found ${r.failures} failure(s).`, r.ok ? "done" : "error");
  const mark = { ok: ["✓", "mark-ok"], info: ["i", "muted"], warn: ["!", "mark-warn"], fail: ["✗", "mark-bad"] };
  out.replaceChildren(...(r.sections || []).map((s) => el("section", {},
    el("h2", {}, s.title),
    table(["", "Finding", "What to do"], s.findings.map((f) => [
      el("span", { class: mark[f.level][1], "aria-label": f.level }, mark[f.level][0]), f.what, f.fix || ""]), "Nothing to report."))));
}

async function domains() {
  const r = await api("GET", "/domains");
  const add = el("form", { id: "domain-add", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await act("Adding " + v.name, () => api("POST", "/domains", { name: v.name }))) domains();
  } }, field("New domain", { name: "name", required: true, placeholder: "example.com", id: "domain-name" }),
  el("button", { type: "submit" }, "Add domain"));
  const records = el("div", { id: "records" });
  view("Domains", add,
    table(["Domain", ""], r.names.map((n) => [n, el("div", { class: "actions" },
      el("button", { type: "button", class: "quiet", onclick: () => dnsRecords(n, records) }, "DNS records"),
      el("button", { type: "button", class: "danger", onclick: async () => {
        if (confirm(`Delete the domain ${n}? Its accounts must be deleted first.`) &&
            await act("Deleting " + n, () => api("DELETE", "/domains/" + encodeURIComponent(n)))) domains();
      } }, "Delete"))]), "No domain yet: add the first one above."),
    records);
}

async function dnsRecords(domain, out) {
  out.replaceChildren(el("p", {}, "Checking the DNS records of " + domain + "…"));
  const r = await act("Checking DNS", () => api("GET", `/dns/${encodeURIComponent(domain)}?check=true`));
  if (!r) { out.replaceChildren(); return; }
  say("");
  const mark = { ok: ["✓ ok", "mark-ok"], missing: ["✗ missing", "mark-bad"], wrong: ["✗ wrong", "mark-bad"], unchecked: ["? unchecked", "muted"] };
  out.replaceChildren(el("h2", { id: "records-title" }, "DNS records for " + domain),
    table(["Status", "Name", "Type", "Value", "Why"], r.records.map((x) => [
      el("span", { class: mark[x.status][1] }, mark[x.status][0], x.detail ? el("div", { class: "muted" }, x.detail) : null),
      el("span", { class: "mono" }, x.name), x.type, el("span", { class: "mono" }, x.value), x.why]), "No records."));
}

async function users() {
  const r = await api("GET", "/users");
  const add = el("form", { id: "user-add", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const body = { address: v.address, password: v.password };
    if (v.quota) {
      body.quota = parseSize(v.quota);
      if (body.quota === null) { say("Quota: a size like 2G or 500M", "error"); return; }
    }
    if (await act("Creating " + v.address, () => api("POST", "/users", body))) users();
  } },
  field("Address", { name: "address", type: "email", required: true, id: "user-address", autocomplete: "off" }),
  field("Password", { name: "password", type: "password", required: true, id: "user-password", autocomplete: "new-password" }),
  field("Quota (optional)", { name: "quota", placeholder: "2G", id: "user-quota" }),
  el("button", { type: "submit" }, "Create account"));
  const u = (a) => "/users/" + encodeURIComponent(a);
  view("Users", add, table(["Address", "Used", "Quota", "State", ""], r.users.map((x) => [
    x.address,
    `${bytes(x.used_bytes)} in ${x.messages} message(s)`,
    x.quota_bytes ? bytes(x.quota_bytes) : "unlimited",
    x.shared ? el("a", { href: "#sharing" }, "shared mailbox") : x.disabled ? el("span", { class: "mark-bad" }, "disabled") : "active",
    el("div", { class: "actions" },
      x.shared ? null : el("button", { type: "button", class: "quiet", onclick: (e) => resetPassword(e.target, x.address) }, "Reset password"),
      el("button", { type: "button", class: "quiet", onclick: async () => {
        const q = prompt(`Quota for ${x.address} (like 2G; 0 = unlimited):`, x.quota_bytes ? bytes(x.quota_bytes).replace(" ", "") : "0");
        if (q === null) return;
        const n = parseSize(q);
        if (n === null) { say("Quota: a size like 2G or 500M", "error"); return; }
        if (await act("Setting the quota", () => api("PUT", u(x.address) + "/quota", { bytes: n }))) users();
      } }, "Quota"),
      el("button", { type: "button", class: "quiet", onclick: async () => {
        if (await act(x.disabled ? "Enabling" : "Disabling", () => api("PUT", u(x.address) + "/disabled", { disabled: !x.disabled }))) users();
      } }, x.disabled ? "Enable" : "Disable"),
      el("button", { type: "button", class: "danger", onclick: async () => {
        if (confirm(`Delete ${x.address} and all its mail?`) && await act("Deleting", () => api("DELETE", u(x.address)))) users();
      } }, "Delete"))]), "No accounts yet."));
}

// Replaces the row's buttons with a password form until it is used or cancelled.
function resetPassword(button, address) {
  const actions = button.closest(".actions");
  const saved = Array.from(actions.childNodes);
  const input = el("input", { type: "password", name: "password", required: true, autocomplete: "new-password",
    "aria-label": "New password for " + address });
  const form = el("form", { onsubmit: async (e) => {
    e.preventDefault();
    if (await act("Setting the password", () => api("PUT", "/users/" + encodeURIComponent(address) + "/password", { password: input.value }))) {
      actions.replaceChildren(...saved);
    }
  } }, input, el("button", { type: "submit" }, "Set"),
  el("button", { type: "button", class: "quiet", onclick: () => actions.replaceChildren(...saved) }, "Cancel"));
  actions.replaceChildren(form);
  input.focus();
}

async function aliases() {
  const [a, g] = await Promise.all([api("GET", "/aliases"), api("GET", "/groups")]);
  const list = (s) => s.split(/[\s,]+/).filter(Boolean);
  const addAlias = el("form", { id: "alias-add", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await act("Adding the alias", () => api("POST", "/aliases", { alias: v.alias, targets: list(v.targets) }))) aliases();
  } }, field("Alias", { name: "alias", required: true, placeholder: "sales@example.com or @example.com" }),
  field("Delivers to (comma-separated)", { name: "targets", required: true, size: 40 }),
  el("button", { type: "submit" }, "Add alias"));
  const addGroup = el("form", { id: "group-add", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await act("Adding the group", () => api("POST", "/groups", { group: v.group, members: list(v.members), policy: v.policy }))) aliases();
  } }, field("Group", { name: "group", required: true, placeholder: "team@example.com" }),
  field("Members (comma-separated)", { name: "members", required: true, size: 40 }),
  el("label", {}, "Who may write to it", el("select", { name: "policy" },
    el("option", { value: "domain" }, "anyone in its domain"),
    el("option", { value: "members" }, "its members"),
    el("option", { value: "anyone" }, "anyone"))),
  el("button", { type: "submit" }, "Add group"));
  const del = (name) => el("button", { type: "button", class: "danger", onclick: async () => {
    if (confirm(`Delete ${name}?`) && await act("Deleting", () => api("DELETE", "/aliases/" + encodeURIComponent(name)))) aliases();
  } }, "Delete");
  view("Aliases & groups",
    el("h2", {}, "Aliases"), addAlias,
    table(["Alias", "Delivers to", ""], a.aliases.map(([n, t]) => [n, t.join(", "), del(n)]), "No aliases."),
    el("h2", {}, "Groups"), addGroup,
    table(["Group", "Who may write", "Members", ""], g.groups.map(([n, p, m]) => [n, p, m.join(", "), del(n)]), "No groups."));
}

const RIGHTS_HELP = "Rights (RFC 4314): l see the folder, r read, s keep read/unread, w other flags, " +
  "i add messages, p post, k create folders, x delete the folder, t mark deleted, e expunge, a administer.";

// Shared mailboxes (info@, support@: read by their members, logged in as by no one) and who
// may send as another address.
async function sharing() {
  const [m, g] = await Promise.all([api("GET", "/shared-mailboxes"), api("GET", "/send-as")]);
  const list = (s) => s.split(/[\s,]+/).filter(Boolean);
  const enc = encodeURIComponent;
  const add = el("form", { id: "shared-add", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const body = { address: v.address, members: list(v.members) };
    if (v.rights) body.rights = v.rights;
    if (v.quota) {
      body.quota = parseSize(v.quota);
      if (body.quota === null) { say("Quota: a size like 2G or 500M", "error"); return; }
    }
    if (await act("Creating " + v.address, () => api("POST", "/shared-mailboxes", body))) sharing();
  } },
  field("Address", { name: "address", type: "email", required: true, placeholder: "info@example.com", id: "shared-address" }),
  field("Members (comma-separated)", { name: "members", required: true, size: 40, id: "shared-members" }),
  field("Rights (optional)", { name: "rights", placeholder: "lrswipkxte", size: 12, id: "shared-rights" }),
  field("Quota (optional)", { name: "quota", placeholder: "2G", size: 6 }),
  el("button", { type: "submit" }, "Create shared mailbox"));
  const grant = (address) => el("form", { class: "grant", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const body = v.rights ? { rights: v.rights } : {};
    if (await act("Granting", () => api("PUT", `/shared-mailboxes/${enc(address)}/members/${enc(v.member)}`, body))) sharing();
  } },
  el("input", { name: "member", required: true, placeholder: "member address", "aria-label": "New member of " + address }),
  el("input", { name: "rights", placeholder: "lrswipkxte", size: 10, "aria-label": "Rights" }),
  el("button", { type: "submit", class: "quiet" }, "Grant"));
  const member = (address, x) => el("div", { class: "member" },
    `${x.identifier}: ${x.rights}`, x.folders.length ? ` on ${x.folders.join(", ")}` : "",
    x.elsewhere.length ? el("span", { class: "muted" }, " (" + x.elsewhere.join("; ") + ")") : "", " ",
    el("button", { type: "button", class: "quiet", onclick: async () => {
      if (await act("Revoking", () => api("DELETE", `/shared-mailboxes/${enc(address)}/members/${enc(x.identifier)}`))) sharing();
    } }, "Revoke"));
  const addGrant = el("form", { id: "send-as-add", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await act("Adding the grant", () => api("POST", "/send-as", { address: v.address, delegate: v.delegate, on_behalf: v.on_behalf === "on" }))) sharing();
  } },
  field("Address sent as", { name: "address", type: "email", required: true, placeholder: "info@example.com", id: "send-as-address" }),
  field("Who sends", { name: "delegate", type: "email", required: true, id: "send-as-delegate" }),
  el("label", { class: "inline" }, el("input", { type: "checkbox", name: "on_behalf" }), "only on behalf (Sender: who sends)"),
  el("button", { type: "submit" }, "Allow"));
  view("Shared mailboxes",
    el("p", {}, "A shared mailbox is read by its members: no one logs in as it; their mail program shows it under Shared/ADDRESS."),
    add, el("p", { class: "muted" }, RIGHTS_HELP),
    el("div", { id: "shared-list" }, table(["Address", "Size", "Members", ""], m.mailboxes.map((x) => [
      x.address,
      `${bytes(x.used_bytes)} in ${x.messages} message(s)`,
      el("div", {}, x.members.length ? x.members.map((i) => member(x.address, i)) : el("span", { class: "muted" }, "no members"), grant(x.address)),
      el("div", { class: "actions" }, el("button", { type: "button", class: "danger", onclick: async () => {
        if (confirm(`Delete the shared mailbox ${x.address} and all its mail?`) &&
            await act("Deleting", () => api("DELETE", "/shared-mailboxes/" + enc(x.address)))) sharing();
      } }, "Delete"))]), "No shared mailbox yet.")),
    el("h2", {}, "Send as"),
    el("p", {}, "Who may send with another address in From: as it, or on behalf of it (From: the address, Sender: who sends)."),
    addGrant,
    el("div", { id: "send-as-list" }, table(["Address", "Who sends", "How", ""], g.grants.map((x) => [x.address, x.delegate,
      x.mode === "as" ? "as the address" : "on behalf",
      el("button", { type: "button", class: "danger", onclick: async () => {
        if (await act("Removing the grant", () => api("DELETE", `/send-as/${enc(x.address)}/${enc(x.delegate)}`))) sharing();
      } }, "Remove")]), "No one sends as another address.")));
}

async function queue() {
  const r = await api("GET", "/queue");
  const now = Date.now() / 1000;
  const one = (id, verb, method, path) => el("button", { type: "button", class: verb === "Delete" ? "danger" : "quiet", onclick: async () => {
    if ((verb === "Retry" || confirm(`${verb} message ${id}?`)) && await act(verb, () => api(method, path))) queue();
  } }, verb);
  view("Queue",
    el("p", {}, "Mail waiting to go to other servers, and why it waits."),
    el("button", { type: "button", class: "quiet", onclick: async () => {
      if (await act("Retrying everything", () => api("POST", "/queue/retry"))) queue();
    } }, "Retry all now"),
    table(["Id", "From", "To", "Age", "Next try", "Last error", ""], r.entries.map((e) => [
      el("span", { class: "mono" }, String(e.id)),
      e.sender || "<>",
      el("div", {}, e.recipients.map(([a, st, err]) => el("div", {}, `${a} (${st})`, err ? el("div", { class: "muted" }, err) : null))),
      ago(Math.max(0, Math.round(now - e.created))),
      e.next_attempt > now ? "in " + ago(Math.round(e.next_attempt - now)) : "now",
      e.last_error || "",
      el("div", { class: "actions" },
        one(e.id, "Retry", "POST", `/queue/${e.id}/retry`),
        one(e.id, "Bounce", "POST", `/queue/${e.id}/bounce`),
        one(e.id, "Delete", "DELETE", `/queue/${e.id}`))]), "The queue is empty."));
}

async function reports() {
  const r = await api("GET", "/reports?days=30");
  const day = (t) => new Date(t * 1000).toISOString().slice(0, 10);
  const send = el("button", { type: "button", class: "quiet", onclick: async () => {
    const s = await act("Sending our reports", () => api("POST", "/reports/send"));
    if (s) say(s.message, "done");
  } }, "Send our reports now");
  const domains = r.domains.map((d) => el("section", { class: "report-domain" },
    el("h2", {}, d.domain),
    el("p", {}, `${d.dmarc_reports} DMARC and ${d.tls_reports} TLS reports, ${day(d.begin)} to ${day(d.end)}, from ${d.reporters.join(", ")}.`),
    d.dmarc_reports ? el("p", {}, `${d.messages} messages sent as ${d.domain}: DMARC pass ${d.dmarc_pass}, fail ${d.dmarc_fail} (SPF aligned pass ${d.spf_aligned_pass}, DKIM aligned pass ${d.dkim_aligned_pass}).`) : null,
    d.dmarc_reports ? table(["Source", "Messages", "Failing DMARC", "SPF", "DKIM", ""], d.sources.map((s) => [
      el("span", { class: "mono" }, s.ip), String(s.messages), String(s.dmarc_fail), s.spf, s.dkim,
      s.look_at ? el("span", { class: "mark-warn" }, "Look at this: if it is yours, add it to SPF or sign its mail with DKIM; if not, someone sends mail in your name.") : ""]), "No sources.") : null,
    d.tls_reports ? el("p", {}, `TLS sessions to this domain's servers: ${d.tls_sessions_ok} fine, ${d.tls_sessions_failed} failed.`) : null,
    d.tls_failures.length ? table(["Failure", "Host", "Sessions"], d.tls_failures.map(([k, h, n]) => [k, h, String(n)]), "") : null));
  view("Reports",
    el("p", {}, "What other mail servers report about your domains (DMARC aggregate and TLS reports, last 30 days): who sends mail as them, what passes, and which sources to look at."),
    send,
    ...(domains.length ? domains : [el("p", { class: "muted" }, "No reports received yet. They come to the addresses in your DMARC and TLSRPT records (see postern dns).")]));
}

async function trace() {
  const results = el("div", { id: "trace-results" });
  const form = el("form", { id: "trace-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const q = new URLSearchParams();
    for (const k of ["id", "message_id", "from", "to"]) if (v[k]) q.set(k, v[k]);
    q.set("since_secs", String(Number(v.hours || 24) * 3600));
    const r = await act("Searching", () => api("GET", "/trace?" + q.toString()));
    if (!r) return;
    say(`${r.traces.length} message(s) found.`, "done");
    results.replaceChildren(...r.traces.map(([id, events]) => el("section", {},
      el("h2", {}, "Message " + id),
      el("ol", { class: "timeline" }, events.map((ev) => el("li", {},
        el("span", { class: "kind" }, ev.kind), " ",
        el("span", { class: "muted" }, new Date(ev.time).toLocaleString()),
        el("div", {}, ev.text)))))));
    if (!r.traces.length) results.replaceChildren(el("p", { class: "muted" }, "No message matches."));
  } },
  field("From", { name: "from", placeholder: "sender address" }),
  field("To", { name: "to", placeholder: "recipient address" }),
  field("Message-ID", { name: "message_id" }),
  field("Trace id", { name: "id" }),
  field("In the last hours", { name: "hours", type: "number", min: 1, value: 24 }),
  el("button", { type: "submit" }, "Search"));
  view("Message trace", el("p", {}, "Where did a message go? Every step from arrival to delivery, with the remote servers' replies."), form, results);
  // From a dashboard link: #trace/from=ADDRESS
  const given = new URLSearchParams(location.hash.split("/").slice(1).join("/"));
  if ([...given.keys()].length) {
    for (const [k, v] of given) if (form.elements[k]) form.elements[k].value = v;
    form.requestSubmit();
  }
}

function utc(t) { return t ? new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "-"; }

// ACME: what postern acme status tells, and renewing by hand.
function certificates(st) {
  if (!st.enabled) {
    return el("p", { id: "acme-off" }, "Certificates from Let's Encrypt are off: set [acme] enabled = true in the configuration file and restart.");
  }
  const now = Date.now() / 1000;
  return el("div", { id: "acme" },
    el("p", {}, "From " + st.directory + " (" + st.challenge + "), renewed by the server two thirds into their lifetime."),
    table(["Names", "Valid until", "Days left", "Renewed from", "Last error"], st.certificates.map((c) => [
      c.names.join(", "), utc(c.not_after), c.not_after ? String(Math.floor((c.not_after - now) / 86400)) : "-",
      utc(c.renew_at), c.last_error ? c.last_error + (c.fix ? " Fix: " + c.fix : "") : ""]),
      "No certificate yet: the server orders them when it runs."),
    st.skipped.length ? table(["Name not requested", "Why"], st.skipped.map((k) => [k.name, k.reason]), "") : null,
    st.tlsa.length ? el("pre", { class: "mono" }, st.tlsa.join("\n")) : null,
    el("button", { type: "button", id: "acme-renew", onclick: async () => {
      if (await act("Renewing", () => api("POST", "/acme/renew"))) settings();
    } }, "Renew what is due now"));
}

async function settings() {
  const r = await api("GET", "/settings");
  const acme = await api("GET", "/acme");
  view("Settings",
    el("p", {}, "Accounts, domains, aliases, groups, quotas and forwarding (the other pages) change at once. " +
      "The settings below are in the configuration file; edit it on the server and restart Postern for them to take effect. " +
      "A new TLS certificate or DKIM key is picked up without a restart:"),
    el("button", { type: "button", id: "reload", onclick: () => act("Reloading", () => api("POST", "/reload")) },
      "Reload the certificate and DKIM keys"),
    el("h2", {}, "Certificates"),
    certificates(acme.status),
    el("h2", {}, "Configuration file"),
    el("p", { class: "mono" }, r.path),
    el("pre", { class: "mono", id: "config-text" }, r.text));
}

// --- the user's own account ----------------------------------------------------------------

async function account() {
  const me = await api("GET", "/me");
  const pw = el("form", { class: "stack", id: "password-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (v.password !== v.again) { say("The two passwords differ.", "error"); return; }
    if (await act("Changing the password", () => api("PUT", "/me/password", { password: v.password, current: v.current }))) e.target.reset();
  } },
  field("Current password", { name: "current", type: "password", required: true, autocomplete: "current-password", id: "current-password" }),
  field("New password", { name: "password", type: "password", required: true, autocomplete: "new-password", id: "new-password" }),
  field("New password again", { name: "again", type: "password", required: true, autocomplete: "new-password", id: "new-password-again" }),
  el("button", { type: "submit", id: "password-submit" }, "Change password"));
  const fwd = el("form", { id: "forward-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await act("Setting forwarding", () => api("PUT", "/me/forward", { to: v.to, keep_copy: v.keep === "on" }))) account();
  } },
  field("Forward my mail to", { name: "to", type: "email", required: true, value: me.forward ? me.forward.to : "" }),
  el("label", { class: "inline" }, el("input", { type: "checkbox", name: "keep", checked: !me.forward || me.forward.keep_copy }), "keep a copy here"),
  el("button", { type: "submit" }, "Forward"),
  me.forward ? el("button", { type: "button", class: "quiet", onclick: async () => {
    if (await act("Stopping forwarding", () => api("DELETE", "/me/forward"))) account();
  } }, "Stop forwarding") : null);
  const vac = el("form", { class: "stack", id: "vacation-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const body = { text: v.text, days: Number(v.days || 7) };
    if (v.subject) body.subject = v.subject;
    if (await act("Turning the vacation reply on", () => api("PUT", "/me/vacation", body))) account();
  } },
  field("Subject (optional)", { name: "subject" }),
  el("label", {}, "Reply", el("textarea", { name: "text", required: true })),
  field("Reply to each sender once every (days)", { name: "days", type: "number", min: 1, max: 365, value: 7 }),
  el("button", { type: "submit" }, "Turn the reply on"),
  me.vacation ? el("button", { type: "button", class: "quiet", onclick: async () => {
    if (await act("Turning the vacation reply off", () => api("DELETE", "/me/vacation"))) account();
  } }, "Turn the reply off") : null);
  const quota = me.quota_bytes ? `${bytes(me.used_bytes)} of ${bytes(me.quota_bytes)} used` : `${bytes(me.used_bytes)} used (no limit)`;
  const shares = el("div", { id: "sharing" });
  view("My account",
    el("p", {}, el("strong", {}, me.address), " — ", quota, `, ${me.messages ?? 0} message(s).`),
    el("h2", {}, "Settings for your mail program"),
    table(["Service", "Server", "Port", "Security", "User name"], me.settings.map((s) => [s.service, el("span", { class: "mono" }, s.host), String(s.port), s.security, s.username]), "No mail service is configured."),
    el("p", { class: "muted" }, "The password is the one you log in here with."),
    el("h2", {}, "Password"), pw,
    el("h2", {}, "Forwarding"), el("p", {}, me.forward ? `Your mail goes to ${me.forward.to}${me.forward.keep_copy ? " and a copy stays here" : ""}.` : "Your mail is not forwarded."), fwd,
    el("h2", {}, "Vacation reply"), el("p", {}, me.vacation ? "A vacation reply is on." : "No vacation reply is on."), vac,
    el("h2", {}, "Sharing"), shares);
  await mySharing(shares);
}

// "6 folders, rights lr" when the rights are the same on each, else "INBOX (lr), Sent (l)".
function foldersWords(folders) {
  if (folders.length && folders.every(([, r]) => r === folders[0][1])) {
    return (folders.length === 1 ? folders[0][0] : folders.length + " folders") + ", rights " + folders[0][1];
  }
  return folders.map(([n, rights]) => `${n} (${rights})`).join(", ");
}

// Who else may use each of the user's folders, and what others share with them.
async function mySharing(out) {
  let r;
  try { r = await api("GET", "/me/sharing"); } catch (e) {
    out.replaceChildren(el("p", { class: "muted" }, "Sharing cannot be shown now: " + e.message));
    return;
  }
  const again = () => mySharing(out);
  const form = el("form", { id: "share-form", onsubmit: async (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    if (await act("Sharing " + v.folder, () => api("PUT", "/me/sharing", { folder: v.folder, identifier: v.identifier, rights: v.rights }))) again();
  } },
  el("label", {}, "Folder", el("select", { name: "folder", id: "share-folder" }, r.folders.map((f) => el("option", { value: f.name }, f.name)))),
  field("With", { name: "identifier", required: true, placeholder: "bob@example.com, $team@example.com, $example.com", size: 32, id: "share-identifier" }),
  field("Rights", { name: "rights", required: true, value: "lr", size: 12, id: "share-rights" }),
  el("button", { type: "submit" }, "Share"));
  const line = (folder, x) => el("div", {}, `${x.identifier}: ${x.rights} `,
    el("button", { type: "button", class: "quiet", onclick: async () => {
      const q = new URLSearchParams({ folder, identifier: x.identifier }).toString();
      if (await act("Removing", () => api("DELETE", "/me/sharing?" + q))) again();
    } }, "Remove"));
  out.replaceChildren(
    el("p", {}, "Let others use your folders: they see them in their mail program under Shared/" + r.address + ". " +
      "Name a person by address, a group as $group@domain, everyone of a domain as $domain."),
    form, el("p", { class: "muted" }, RIGHTS_HELP + " \"lr\" lets them read; \"lrswite\" lets them work in it."),
    el("div", { id: "my-folders" }, table(["Folder", "Who may use it"], r.folders.map((f) => [f.name,
      f.acl.length ? el("div", {}, f.acl.map((x) => line(f.name, x))) : el("span", { class: "muted" }, "only you")]), "No folders.")),
    el("h3", {}, "Shared with you"),
    el("div", { id: "shared-with-me" }, table(["From", "Under", "Folders"], r.shared_with.map((w) => [
      w.owner + (w.shared ? " (shared mailbox)" : ""), "Shared/" + w.owner, foldersWords(w.folders)]), "Nothing is shared with you.")),
    r.send_as.length ? el("p", {}, "You may send " + r.send_as.map((g) =>
      (g.mode === "as" ? "as " : "on behalf of ") + g.address + (g.mode === "as" ? "" : " (with Sender: " + r.address + ")")).join(", ") + ".") : null);
}

// --- start ---------------------------------------------------------------------------------

(async function boot() {
  try {
    const r = await fetch("/api/v1/session", { credentials: "same-origin" });
    if (r.ok) {
      Object.assign(state, await r.json());
      start();
      return;
    }
  } catch (_) { /* not logged in */ }
  showLogin();
})();
