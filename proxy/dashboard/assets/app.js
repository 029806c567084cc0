// Stowage dashboard: plain JavaScript, no build step. Every number comes
// from the JSON API under /api/v1/ (docs/api.md); the views poll it.
"use strict";

const TOKEN_KEY = "stowage-token";
const $ = (id) => document.getElementById(id);
const state = { session: null, view: "overview", timer: null, repo: null, openJobs: new Set(), closedImages: new Set() };

class AuthError extends Error {}

// --- API -----------------------------------------------------------------

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, Object.assign({}, opts, { headers, cache: "no-store" }));
  if (resp.status === 401) throw new AuthError("token refused");
  const text = await resp.text();
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch (e) { body = { error: text }; }
  }
  if (!resp.ok) throw new Error((body && body.error) || resp.status + " " + resp.statusText);
  return body;
}

// --- formatting ------------------------------------------------------------

function bytes(n) {
  if (n == null || n < 0) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}
const pct = (r) => (r < 0 || r == null ? "–" : (r * 100).toFixed(1) + " %");
function dur(s) {
  if (s == null || s < 0 || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const short = (d) => (d ? d.replace(/^sha256:/, "").slice(0, 12) : "");

// el builds an element: el("td", {class: "num"}, "text", child...).
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
function setText(id, text, value) {
  const e = $(id);
  e.textContent = text;
  if (value !== undefined) e.dataset.value = value;
}
function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function showError(err) {
  const b = $("global-error");
  if (!err) { b.hidden = true; return; }
  if (err instanceof AuthError) { b.hidden = true; openSignin(state.session ? "The token was refused." : ""); return; }
  b.textContent = String(err.message || err);
  b.hidden = false;
}

// --- session ---------------------------------------------------------------

async function loadSession() {
  try {
    state.session = await api("/api/v1/session");
  } catch (err) {
    state.session = null;
    if (err instanceof AuthError) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      openSignin(had ? "The token was refused." : "");
      renderAuth();
      return false;
    }
    showError(err);
    return false;
  }
  renderAuth();
  return true;
}

function renderAuth() {
  const s = state.session;
  const signedIn = !!(s && s.authenticated);
  $("auth-state").textContent = signedIn ? "Signed in" : s && s.public_read_only ? "Read-only view" : "Not signed in";
  $("signin-open").hidden = signedIn;
  $("signout").hidden = !signedIn;
  const canWrite = !!(s && s.can_write);
  $("pf-submit").disabled = !canWrite;
  $("prefetch-need-token").hidden = canWrite;
  $("footer").textContent = s ? "Stowage " + (s.version || "") + " · replica " + (s.replica || "") : "";
}

function openSignin(msg) {
  $("signin-error").textContent = msg || "";
  const d = $("signin");
  if (!d.open) d.showModal();
  $("token").focus();
}

async function signin(ev) {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("signin-error").textContent = "";
  if (await loadSession()) {
    $("token").value = "";
    $("signin").close();
    refresh();
  }
}

// --- views -------------------------------------------------------------------

const VIEWS = ["overview", "activity", "contents", "prefetch"];
const POLL = { overview: 5000, activity: 1000, contents: 0, prefetch: 1500 };

function route() {
  const v = (location.hash || "#overview").slice(1);
  state.view = VIEWS.includes(v) ? v : "overview";
  for (const name of VIEWS) {
    $("view-" + name).hidden = name !== state.view;
    const a = $("nav-" + name);
    if (name === state.view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  refresh();
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.session) return;
  try {
    if (state.view === "overview") await loadOverview();
    else if (state.view === "activity") await loadActivity();
    else if (state.view === "contents") await loadRepos();
    else if (state.view === "prefetch") await loadJobs();
    showError(null);
  } catch (err) {
    showError(err);
    if (err instanceof AuthError) return;
  }
  const every = POLL[state.view];
  if (every) state.timer = setTimeout(refresh, every);
}

// Overview

async function loadOverview() {
  const [o, st] = await Promise.all([api("/api/v1/overview"), api("/api/v1/stats?range=" + $("range").value)]);
  const u = o.usage;
  if (u.tracked) {
    setText("ov-usage", bytes(u.used_bytes) + (u.cap_bytes ? " of " + bytes(u.cap_bytes) : " (no cap)"), u.used_bytes);
    $("ov-usage-bar").value = u.cap_bytes ? Math.min(u.used_bytes / u.cap_bytes, 1) : 0;
    setText("ov-objects", String(u.objects), u.objects);
  } else {
    const what = u.indexing ? "indexing…" : "not tracked";
    setText("ov-usage", what, "");
    $("ov-usage-bar").value = 0;
    setText("ov-objects", what, "");
  }
  if (u.fs_total_bytes) {
    const usedFS = u.fs_total_bytes - u.fs_free_bytes;
    setText("ov-fs", "Filesystem: " + bytes(usedFS) + " used of " + bytes(u.fs_total_bytes) + ", " + bytes(u.fs_free_bytes) + " free");
    $("ov-fs-bar").value = usedFS / u.fs_total_bytes;
  } else {
    setText("ov-fs", "Filesystem: unknown");
  }
  const t = o.traffic;
  setText("ov-hitratio", pct(t.hit_ratio), t.hit_ratio);
  setText("ov-hits", String(t.hits), t.hits);
  setText("ov-misses", String(t.misses), t.misses);
  setText("ov-served", bytes(t.served_bytes), t.served_bytes);
  setText("ov-upstream", bytes(t.upstream_bytes), t.upstream_bytes);
  setText("ov-saved", bytes(t.saved_bytes), t.saved_bytes);
  setText("ov-fills", String(o.fills_in_flight), o.fills_in_flight);
  fill($("upstreams").tBodies[0], o.upstreams.map((x) => el("tr", { "data-host": x.host },
    el("td", {}, el("code", { text: x.host })),
    el("td", { class: "state-" + x.state, text: x.state }),
    el("td", { text: x.down_until ? when(x.down_until) : "–" }),
    el("td", { text: x.last_error ? x.last_error + (x.last_error_at ? " (" + when(x.last_error_at) + ")" : "") : "–" }),
    el("td", { class: "num", text: x.rate_limit ? x.rate_limit.remaining + " / " + x.rate_limit.limit : "–" }),
    el("td", { class: "num", text: bytes(x.upstream_bytes) }),
    el("td", { class: "num", text: String(x.stale_serves) }))));
  plot(st);
}

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

// plot draws the stats points as polylines: hit ratio (0..1) and bytes.
function plot(st) {
  const W = 600, H = 120, L = 4, B = 16;
  const pts = st.points || [];
  const span = st.range === "day" ? 86400e3 : 3600e3;
  const end = pts.length ? new Date(pts[pts.length - 1].t).getTime() : Date.now();
  const x = (t) => L + ((new Date(t).getTime() - (end - span)) / span) * (W - L - 4);
  const axis = (s, label) => {
    s.replaceChildren(svg("line", { class: "axis", x1: L, y1: H - B, x2: W, y2: H - B }),
      svg("text", { x: L, y: H - 3 }, st.range === "day" ? "−24 h" : "−60 min"),
      svg("text", { x: W - 30, y: H - 3 }, "now"),
      svg("text", { x: L + 2, y: 11 }, label));
    if (pts.length === 0) s.append(svg("text", { x: W / 2 - 40, y: H / 2 }, "no samples yet"));
  };
  const line = (s, cls, sel, top) => {
    const p = pts.filter((q) => sel(q) != null).map((q) => x(q.t).toFixed(1) + "," + (H - B - (sel(q) / top) * (H - B - 14)).toFixed(1));
    if (p.length > 1) s.append(svg("polyline", { class: cls, points: p.join(" ") }));
    else if (p.length === 1) {
      const [cx, cy] = p[0].split(",");
      s.append(svg("circle", { class: cls, cx, cy, r: 3 }));
    }
  };
  const r = $("plot-ratio");
  axis(r, "100 %");
  line(r, "ratio", (q) => (q.hit_ratio < 0 ? null : q.hit_ratio), 1);
  const b = $("plot-bytes");
  const top = Math.max(1, ...pts.map((q) => Math.max(q.served_bytes, q.upstream_bytes)));
  axis(b, bytes(top));
  line(b, "served", (q) => q.served_bytes, top);
  line(b, "fetched", (q) => q.upstream_bytes, top);
}

// Live activity

async function loadActivity() {
  const a = await api("/api/v1/activity");
  const canWrite = state.session && state.session.can_write;
  $("fills-empty").hidden = a.fills.length > 0;
  fill($("fills").tBodies[0], a.fills.map((f) => {
    const label = "Download of " + short(f.digest);
    return el("tr", { "data-digest": f.digest },
      el("td", {}, el("code", { text: f.host + "/" + f.repo })),
      el("td", {}, el("code", { text: short(f.digest), title: f.digest })),
      el("td", {}, el("progress", { class: "fill-progress", max: 1, value: f.progress < 0 ? null : f.progress, "aria-label": label }),
        el("span", { class: "muted", text: " " + pct(f.progress) })),
      el("td", { class: "num fill-bytes", "data-written": f.written, text: bytes(f.written) + " / " + (f.size >= 0 ? bytes(f.size) : "?") }),
      el("td", { class: "num", text: bytes(f.rate) + "/s" }),
      el("td", { class: "num", text: dur(f.eta_seconds) }),
      el("td", { class: "num", text: String(f.clients) }),
      el("td", f.owner ? { text: f.replica + " (peer)", title: "Streamed from replica " + f.replica + ", which downloads it" } : { text: f.replica }),
      el("td", {}, canWrite ? el("button", { type: "button", text: "Cancel", "aria-label": "Cancel " + label, onclick: () => cancelFill(f.digest) }) : null));
  }));
  $("stale").replaceChildren(...(a.stale_serves.length ? a.stale_serves.map((s) => el("li", {}, el("code", { text: s.upstream }), ": " + s.total)) : [el("li", { class: "muted", text: "none" })]));
  const rs = a.recent_stale_serves || [];
  $("stale-recent-empty").hidden = rs.length > 0;
  $("stale-recent").hidden = rs.length === 0;
  fill($("stale-recent").tBodies[0], rs.map((x) => el("tr", {},
    el("td", { text: when(x.time) }),
    el("td", {}, el("code", { text: x.repository })),
    el("td", {}, el("code", { text: x.tag })),
    el("td", { class: "num", text: x.age_seconds < 0 ? "unknown" : dur(x.age_seconds) }),
    el("td", { class: "error", text: x.error }))));
  const ev = a.evictions || [];
  $("evictions-empty").textContent = a.evictions_tracked ? "None." : "Not tracked (no usage index).";
  $("evictions-empty").hidden = ev.length > 0;
  $("evictions").hidden = ev.length === 0;
  fill($("evictions").tBodies[0], ev.map((e) => el("tr", {},
    el("td", { text: when(e.time) }),
    el("td", {}, el("code", { text: short(e.digest), title: e.digest })),
    el("td", { class: "num", text: bytes(e.size) }),
    el("td", { text: e.reason || "" }))));
}

async function cancelFill(d) {
  if (!confirm("Cancel the download of " + d + "? Its clients are cut short.")) return;
  try { await api("/api/v1/fills/" + encodeURIComponent(d), { method: "DELETE" }); } catch (err) { showError(err); }
  refresh();
}

// Contents

async function loadRepos() {
  const q = $("search").value.trim();
  const r = await api("/api/v1/repositories?q=" + encodeURIComponent(q));
  $("repos-empty").hidden = r.repositories.length > 0;
  fill($("repos").tBodies[0], r.repositories.map((x) => el("tr", {},
    el("td", {}, el("code", { text: x.upstream })),
    el("td", {}, el("button", { type: "button", class: "link repo-link", "data-repo": x.name, text: x.path, onclick: () => showRepo(x.name) })),
    el("td", { class: "num", text: String(x.tags) }),
    el("td", { class: "num", title: x.last_pull ? "last pull " + x.last_pull : "", text: String(x.pulls || 0) }))));
}

function pullBlock(p) {
  const rows = [];
  for (const [k, label] of [["containerd", "containerd"], ["docker", "Docker"], ["podman", "podman"]]) {
    const code = el("code", { text: p[k], "data-client": k });
    rows.push(el("span", { class: "muted", text: label }), code,
      el("button", { type: "button", "aria-label": "Copy the " + label + " command", text: "Copy", onclick: (ev) => copy(p[k], ev.target) }));
  }
  return el("div", { class: "pull" }, ...rows);
}

async function copy(text, btn) {
  try { await navigator.clipboard.writeText(text); btn.textContent = "Copied"; } catch (e) { btn.textContent = "Select and copy"; }
  setTimeout(() => { btn.textContent = "Copy"; }, 1500);
}

async function showRepo(name) {
  state.repo = name;
  const box = $("repo-detail");
  try {
    const r = await api("/api/v1/repository?name=" + encodeURIComponent(name));
    box.replaceChildren(
      el("h3", {}, el("code", { text: r.name })),
      el("p", { class: "muted", id: "repo-pulls", "data-pulls": r.pulls || 0,
        text: (r.pulls || 0) + " pulls" + (r.last_pull ? ", the last " + when(r.last_pull) : "") }),
      el("p", { class: "muted", text: "Pull through this Stowage (" + r.pull_host + "):" }),
      pullBlock(r.pull),
      el("div", { class: "scroll" }, el("table", { id: "tags" },
        el("thead", {}, el("tr", {}, ...["Tag", "Digest", "Platforms", "Size", "Fetched", "Pinned"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...r.tag_list.map((t) => el("tr", { "data-tag": t.tag },
          el("td", {}, el("code", { text: t.tag })),
          el("td", {}, t.digest ? el("button", { type: "button", class: "link mono", text: short(t.digest), title: t.digest, onclick: () => showManifest(name, t.digest) }) : el("span", { class: "error", text: t.error || "?" })),
          el("td", {}, ...(t.platforms || []).map((p) => el("span", { class: "pill", text: p }))),
          el("td", { class: "num tag-size", "data-size": t.size, text: bytes(t.size) + (t.complete ? "" : " (partial)") }),
          el("td", { text: when(t.fetched_at) }),
          el("td", { class: t.pinned ? "pin" : "", text: t.pinned ? "pinned (" + t.pinned_by.join(", ") + ")" : "no" })))))),
      el("div", { id: "manifest-detail", "aria-live": "polite" }));
  } catch (err) {
    showError(err);
  }
}

async function showManifest(repo, digest) {
  const box = $("manifest-detail");
  try {
    const m = await api("/api/v1/manifest?repo=" + encodeURIComponent(repo) + "&digest=" + encodeURIComponent(digest));
    const kids = [el("h3", {}, "Manifest ", el("code", { text: short(m.digest), title: m.digest })),
      el("p", { class: "muted", text: m.media_type + " · " + bytes(m.total_size) + (m.platform ? " · " + m.platform : "") + (m.complete ? " · complete" : " · partially cached") }),
      pullBlock(m.pull)];
    if (m.manifests) {
      kids.push(el("table", { id: "children" },
        el("thead", {}, el("tr", {}, ...["Platform", "Digest", "Size", "Cached"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...m.manifests.map((c) => el("tr", {},
          el("td", { text: c.platform || "–" }),
          el("td", {}, c.cached ? el("button", { type: "button", class: "link mono", text: short(c.digest), title: c.digest, onclick: () => showManifest(repo, c.digest) }) : el("code", { text: short(c.digest) })),
          el("td", { class: "num", text: bytes(c.size) }),
          el("td", { text: c.cached ? "yes" : "no" }))))));
    } else {
      const rows = [m.config].concat(m.layers || []);
      kids.push(el("table", { id: "layers" },
        el("thead", {}, el("tr", {}, ...["", "Digest", "Media type", "Size", "Cached"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...rows.map((l, i) => el("tr", {},
          el("td", { text: i === 0 ? "config" : "layer " + i }),
          el("td", {}, el("code", { text: short(l.digest), title: l.digest })),
          el("td", { class: "muted", text: l.media_type || "" }),
          el("td", { class: "num layer-size", "data-size": l.size, text: bytes(l.size) }),
          el("td", { text: l.cached ? "yes" : "no" }))))));
    }
    box.replaceChildren(...kids);
  } catch (err) {
    showError(err);
  }
}

// Prefetch

async function loadJobs() {
  const r = await api("/api/v1/prefetch");
  const jobs = r.jobs || [];
  $("jobs-empty").hidden = jobs.length > 0;
  // The cluster's shared job list cannot be reached: only this replica's jobs.
  $("jobs-warning").hidden = !r.warning;
  $("jobs-warning").textContent = r.warning || "";
  // Reports of finished jobs that are shown are fetched once.
  const cards = [];
  for (const j of jobs) {
    const p = j.progress || {};
    const frac = p.images ? (p.images_done + p.images_failed) / p.images : j.state === "succeeded" ? 1 : 0;
    const card = el("article", { class: "job", "data-job": j.id, "data-state": j.state },
      el("h4", {}, (j.name || j.id) + " ", el("span", { class: "state-" + j.state, text: j.state }), el("span", { class: "muted", text: " · " + j.id + " · " + when(j.created) +
        (j.runner ? " · replica " + j.runner.slice(0, 8) + (j.runs > 1 ? " (run " + j.runs + ", resumed)" : "") : "") })),
      el("progress", { max: 1, value: frac, "aria-label": "Progress of job " + (j.name || j.id) }),
      el("p", { class: "muted", text: (p.images_done || 0) + " of " + (p.images || 0) + " images done" + (p.images_failed ? ", " + p.images_failed + " failed" : "") +
        " · " + bytes(p.bytes_done || 0) + " of " + bytes(p.bytes_planned || 0) + " · " + bytes(p.bytes_upstream || 0) + " fetched" }),
      j.error ? el("p", { class: "error", text: j.error }) : null);
    if (j.state === "running") {
      // Where each image is, while the job runs (open unless closed).
      const det = el("details", { class: "images" }, el("summary", { text: "Images" }));
      det.open = !state.closedImages.has(j.id);
      det.addEventListener("toggle", () => {
        if (det.open) { state.closedImages.delete(j.id); loadImages(j.id, det); } else state.closedImages.add(j.id);
      });
      if (det.open) loadImages(j.id, det);
      card.append(det);
    }
    if (j.finished) {
      const det = el("details", { class: "report" }, el("summary", { text: "Report" }));
      if (state.openJobs.has(j.id)) det.open = true;
      det.addEventListener("toggle", () => {
        if (det.open) { state.openJobs.add(j.id); loadReport(j.id, det); } else state.openJobs.delete(j.id);
      });
      if (det.open) loadReport(j.id, det);
      card.append(det);
    }
    cards.push(card);
  }
  $("jobs").replaceChildren(...cards);
}

async function loadImages(id, det) {
  try {
    const j = await api("/api/v1/prefetch/" + encodeURIComponent(id));
    const imgs = (j.progress && j.progress.per_image) || [];
    const body = [el("div", { class: "scroll" }, el("table", { class: "job-images" },
      el("thead", {}, el("tr", {}, ...["Image", "State", "Progress", "Bytes", "Fetched"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...imgs.map((im) => {
        const frac = im.state === "done" ? 1 : im.bytes_planned > 0 ? Math.min(im.bytes_done / im.bytes_planned, 1) : im.state === "running" ? null : 0;
        return el("tr", { "data-ref": im.ref, "data-state": im.state },
          el("td", {}, el("code", { text: im.ref })),
          el("td", { class: im.state === "failed" ? "error" : "state-" + (im.state === "done" ? "succeeded" : im.state), text: im.state, title: im.error || "" }),
          el("td", {}, el("progress", { max: 1, value: frac, "aria-label": "Progress of " + im.ref })),
          el("td", { class: "num", text: bytes(im.bytes_done) + " / " + (im.bytes_planned > 0 ? bytes(im.bytes_planned) : "?") }),
          el("td", { class: "num", text: bytes(im.bytes_upstream) }));
      }))))];
    if (j.progress && j.progress.images_truncated) body.push(el("p", { class: "muted", text: "The first " + imgs.length + " images are listed." }));
    det.replaceChildren(det.querySelector("summary"), ...body);
  } catch (err) {
    showError(err);
  }
}

async function loadReport(id, det) {
  try {
    const j = await api("/api/v1/prefetch/" + encodeURIComponent(id));
    const rep = j.report;
    const body = [];
    if (!rep) body.push(el("p", { class: "muted", text: "No report." }));
    else {
      body.push(el("p", { class: "muted", text: rep.totals.images + " images, " + rep.totals.failed + " failed, " + bytes(rep.totals.bytes) + " (" + bytes(rep.totals.upstream_bytes) + " fetched, " + bytes(rep.totals.cached_bytes) + " already cached), " + dur(rep.duration_ns / 1e9) }));
      body.push(el("div", { class: "scroll" }, el("table", { class: "report-images" },
        el("thead", {}, el("tr", {}, ...["Image", "Digest", "Platforms", "Size", "Fetched", "Result"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...rep.images.map((im) => el("tr", { "data-ref": im.ref },
          el("td", {}, el("code", { text: im.ref })),
          el("td", {}, el("code", { text: short(im.digest), title: im.digest || "" })),
          el("td", {}, ...(im.platforms || []).map((p) => el("span", { class: "pill", text: p }))),
          el("td", { class: "num", text: bytes(im.bytes) }),
          el("td", { class: "num", text: bytes(im.upstream_bytes) }),
          el("td", { class: im.error ? "error" : "state-succeeded", text: im.error || "ok" })))))));
      for (const pr of rep.problems || []) body.push(el("p", { class: "error", text: pr }));
    }
    det.replaceChildren(det.querySelector("summary"), ...body);
  } catch (err) {
    showError(err);
  }
}

async function submitPrefetch(ev) {
  ev.preventDefault();
  const q = new URLSearchParams();
  const name = $("pf-name").value.trim();
  if (name) q.set("name", name);
  for (const p of $("pf-platform").value.split(",").map((s) => s.trim()).filter(Boolean)) q.append("platform", p);
  $("pf-status").textContent = "Submitting…";
  try {
    const job = await api("/api/v1/prefetch?" + q, { method: "POST", headers: { "Content-Type": "text/plain" }, body: $("pf-list").value });
    $("pf-status").textContent = "Job " + job.id + " started.";
    state.openJobs.add(job.id);
  } catch (err) {
    $("pf-status").textContent = err instanceof AuthError ? "Refused: sign in with the admin token." : "Refused: " + err.message;
  }
  refresh();
}

// --- start -------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("signin-form").addEventListener("submit", signin);
  $("signin-cancel").addEventListener("click", () => $("signin").close());
  $("signin-open").addEventListener("click", () => openSignin(""));
  $("signout").addEventListener("click", async () => { sessionStorage.removeItem(TOKEN_KEY); await loadSession(); refresh(); });
  $("range").addEventListener("change", refresh);
  $("prefetch-form").addEventListener("submit", submitPrefetch);
  let searchTimer;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(refresh, 200); });
  $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  window.addEventListener("hashchange", route);
  await loadSession();
  route();
});
