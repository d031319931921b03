// Flows BFF development console.
//
// Talks only to this origin's /api/bff/v1. The session lives in an HttpOnly cookie the page
// cannot read; every call sends X-CSRF: 1 so the BFF knows it comes from our own script.
// All text from the API goes into the page through textContent, never as markup.
"use strict";

(() => {
  const API = "/api/bff/v1";
  const LOGIN_URL = API + "/auth/login?returnTo=/";
  const FORM_FIELDS = ["name", "sourceId", "destinationId", "retryPolicy.maxAttempts",
    "retryPolicy.backoffSeconds"];

  const $ = (id) => document.getElementById(id);

  const state = {
    session: null,
    tenantId: null,
    clusterId: null,
    options: null,
    cursor: null, // cursor of the page on screen; null for the first page
    nextCursor: null,
    editing: null, // {id, etag} while the form edits an existing flow
    expiryTimer: null,
    generation: 0, // bumps on every tenant or cluster change; stale answers are dropped
  };

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || "Request failed");
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, { body, headers } = {}) {
    const init = {
      method,
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-CSRF": "1", Accept: "application/json", ...(headers || {}) },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, { title: "Network error", detail: "The BFF did not answer (" + err.message + ")." });
    }
    const text = response.status === 204 ? "" : await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const problem = data && typeof data === "object" ? data
        : { title: response.statusText || "Error", detail: "HTTP " + response.status };
      throw new ApiError(response.status, problem);
    }
    return { data, etag: response.headers.get("ETag") };
  }

  const enc = encodeURIComponent;
  const clusterPath = () => "/tenants/" + enc(state.tenantId) + "/clusters/" + enc(state.clusterId);

  // --- messages ---------------------------------------------------------------------------------

  function clearProblem() {
    $("problem").hidden = true;
    $("problem-title").textContent = "";
    $("problem-detail").textContent = "";
    $("problem-errors").replaceChildren();
    for (const span of document.querySelectorAll(".field-error")) span.textContent = "";
    for (const input of document.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  function showProblem(err) {
    clearProblem();
    const problem = err instanceof ApiError ? err.problem : { title: "Error", detail: String(err) };
    $("problem-title").textContent = problem.title || "Error";
    $("problem-detail").textContent = problem.detail || "";
    const list = $("problem-errors");
    for (const item of Array.isArray(problem.errors) ? problem.errors : []) {
      const field = String(item.field || "");
      const message = String(item.message || item.code || "invalid");
      const slot = FORM_FIELDS.includes(field) ? document.querySelector(
        '.field-error[data-field="' + field + '"]') : null;
      if (slot) {
        slot.textContent = slot.textContent ? slot.textContent + " " + message : message;
        const input = document.querySelector('[name="' + field + '"]');
        if (input) input.setAttribute("aria-invalid", "true");
      } else {
        const li = document.createElement("li");
        li.textContent = (field ? field + ": " : "") + message;
        list.append(li);
      }
    }
    $("problem").hidden = false;
    setStatus("");
    if (err instanceof ApiError && err.status === 401) showSignedOut();
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  // --- signed out / signed in -------------------------------------------------------------------

  function showSignedOut() {
    state.session = null;
    state.generation += 1;
    clearTimeout(state.expiryTimer);
    $("loading").hidden = true;
    $("account").hidden = true;
    $("signed-in").hidden = true;
    $("no-access").hidden = true;
    $("sessions").hidden = true;
    $("expiry").hidden = true;
    $("signed-out").hidden = false;
  }

  // A session the gateway cannot renew (no refresh token) ends at expiresAt: two minutes before,
  // offer a quiet sign-in (prompt=none; the provider asks the user only if it must) that comes
  // back to this page.
  const EXPIRY_NOTICE_MS = 120000;

  function watchExpiry(session) {
    clearTimeout(state.expiryTimer);
    $("expiry").hidden = true;
    const ends = Date.parse(session.expiresAt);
    if (session.refreshable || Number.isNaN(ends)) return;
    const returnTo = window.location.pathname + window.location.search;
    $("stay-signed-in").href = API + "/auth/login?prompt=none&returnTo=" + enc(returnTo);
    state.expiryTimer = setTimeout(() => {
      const at = new Date(ends).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      $("expiry-text").textContent = "Your sign-in ends at " + at + ".";
      $("expiry").hidden = false;
    }, Math.max(0, ends - Date.now() - EXPIRY_NOTICE_MS));
  }

  // --- sessions on other devices -----------------------------------------------------------------

  async function loadSessions() {
    try {
      const { data } = await api("GET", "/auth/sessions");
      const items = (data.sessions || []).map((item) => {
        const li = document.createElement("li");
        const what = document.createElement("span");
        what.textContent = item.device + (item.current ? " (this browser)" : "");
        const when = document.createElement("span");
        when.className = "muted";
        when.textContent = "last used " + formatTime(item.lastSeenAt);
        li.append(what, " ", when);
        if (!item.current) {
          const end = document.createElement("button");
          end.type = "button";
          end.textContent = "Sign out";
          end.setAttribute("aria-label", "Sign out " + item.device);
          end.addEventListener("click", () => endSession(item.id, item.device));
          li.append(" ", end);
        }
        return li;
      });
      $("session-list").replaceChildren(...items);
    } catch (err) {
      showProblem(err);
    }
  }

  async function endSession(id, device) {
    try {
      await api("DELETE", "/auth/sessions/" + enc(id));
      setStatus("Signed out " + device + ".");
      await loadSessions();
    } catch (err) {
      showProblem(err);
    }
  }

  async function signOutEverywhere() {
    if (!window.confirm("Sign out of every browser and device, this one included?")) return;
    try {
      await api("DELETE", "/auth/sessions");
      showSignedOut();
    } catch (err) {
      showProblem(err);
    }
  }

  function showSignedIn(session) {
    state.session = session;
    const tenants = Array.isArray(session.tenants) ? session.tenants : [];
    const user = session.user || {};
    $("loading").hidden = true;
    $("signed-out").hidden = true;
    $("account").hidden = false;
    $("sessions").hidden = false;
    $("signed-in").hidden = tenants.length === 0;
    $("no-access").hidden = tenants.length > 0;
    $("user-name").textContent = user.name || user.sub || "(unnamed)";
    $("no-access-user").textContent = user.name || user.sub || "(unnamed)";
    $("user-email").textContent = user.email ? "<" + user.email + ">" : "";
    watchExpiry(session);
    if (tenants.length === 0) return;

    $("tenant-list").textContent = tenants.length
      ? tenants.map((t) => t.id + " (" + (t.scopes || []).join(", ") + ")").join("; ")
      : "none";
    fillSelect($("tenant"), tenants.map((t) => ({ value: t.id, label: t.id })), "Choose a tenant");
    if (tenants.length === 1) {
      $("tenant").value = tenants[0].id;
      selectTenant(tenants[0].id);
    } else {
      selectTenant(null);
    }
  }

  function fillSelect(select, items, placeholder) {
    const options = [];
    if (placeholder) {
      const blank = document.createElement("option");
      blank.value = "";
      blank.textContent = placeholder;
      options.push(blank);
    }
    for (const item of items) {
      const option = document.createElement("option");
      option.value = item.value;
      option.textContent = item.label;
      options.push(option);
    }
    select.replaceChildren(...options);
  }

  async function loadSession() {
    try {
      const { data } = await api("GET", "/auth/session");
      showSignedIn(data);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        showSignedOut();
      } else {
        $("loading").hidden = true;
        showProblem(err);
      }
    }
  }

  async function signOut() {
    $("sign-out").disabled = true;
    try {
      const { data } = await api("POST", "/auth/logout");
      if (data && typeof data.endSessionUrl === "string" && /^https?:\/\//.test(data.endSessionUrl)) {
        window.location.assign(data.endSessionUrl);
      } else {
        window.location.reload();
      }
    } catch (err) {
      showProblem(err);
    } finally {
      $("sign-out").disabled = false;
    }
  }

  // --- tenant and cluster -----------------------------------------------------------------------

  async function selectTenant(tenantId) {
    const generation = ++state.generation;
    state.tenantId = tenantId || null;
    state.clusterId = null;
    clearProblem();
    fillSelect($("cluster"), [], tenantId ? "Loading clusters…" : "Choose a tenant first");
    $("cluster").disabled = true;
    showCluster(null);
    if (!tenantId) return;
    try {
      const { data } = await api("GET", "/tenants/" + enc(tenantId) + "/clusters");
      if (generation !== state.generation) return;
      const items = (data.items || []).map((c) => ({
        value: c.id, label: c.name + " (" + c.id + ", " + c.region + ")",
      }));
      fillSelect($("cluster"), items, items.length ? "Choose a cluster" : "No clusters");
      $("cluster").disabled = items.length === 0;
    } catch (err) {
      if (generation === state.generation) showProblem(err);
    }
  }

  async function selectCluster(clusterId) {
    const generation = ++state.generation;
    state.clusterId = clusterId || null;
    clearProblem();
    showCluster(null);
    if (!clusterId) return;
    try {
      const [options] = await Promise.all([
        api("GET", clusterPath() + "/delivery-flow-options"),
        loadFlows(null, generation),
      ]);
      if (generation !== state.generation) return;
      showCluster(options.data);
    } catch (err) {
      if (generation === state.generation) showProblem(err);
    }
  }

  function showCluster(options) {
    state.options = options;
    cancelEdit();
    const form = $("flow-form");
    form.hidden = !options;
    if (!options) {
      $("flow-rows").replaceChildren();
      $("no-flows").hidden = true;
      $("next-page").hidden = true;
      $("first-page").hidden = true;
      return;
    }
    const named = (ref) => ({ value: ref.id, label: (ref.name || "(unnamed)") + " · " + ref.id });
    fillSelect($("flow-source"), (options.sources || []).map(named), "Choose a source");
    fillSelect($("flow-destination"), (options.destinations || []).map(named), "Choose a destination");
    resetForm();
    const canCreate = Boolean(options.permissions && options.permissions.create);
    $("flow-fieldset").disabled = !canCreate;
    $("read-only").hidden = canCreate;
  }

  // --- flows table ------------------------------------------------------------------------------

  async function loadFlows(cursor, generation = state.generation) {
    const query = cursor ? "?cursor=" + enc(cursor) : "";
    const { data } = await api("GET", clusterPath() + "/delivery-flows" + query);
    if (generation !== state.generation) return;
    state.cursor = cursor;
    state.nextCursor = data.page && data.page.nextCursor ? data.page.nextCursor : null;
    renderFlows(data.items || []);
  }

  async function reloadFlows(cursor) {
    const generation = state.generation;
    try {
      await loadFlows(cursor, generation);
    } catch (err) {
      if (generation === state.generation) showProblem(err);
    }
  }

  function describeRef(ref) {
    const cell = document.createElement("td");
    const name = document.createElement("span");
    name.textContent = ref.name || "(name unavailable)";
    const id = document.createElement("span");
    id.className = "muted id";
    id.textContent = ref.id;
    cell.append(name, " ", id);
    return cell;
  }

  function textCell(text, className) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (className) cell.className = className;
    return cell;
  }

  function formatTime(iso) {
    // "2026-11-26T12:13:44.187393Z" → "2026-11-26 12:13:44 UTC"
    if (!iso) return "";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/Z$/, " UTC");
  }

  function renderFlows(items) {
    const rows = items.map((flow) => {
      const row = document.createElement("tr");
      row.dataset.flowId = flow.id;
      const nameCell = document.createElement("td");
      const name = document.createElement("strong");
      name.className = "flow-name";
      name.textContent = flow.name;
      const id = document.createElement("span");
      id.className = "muted id";
      id.textContent = flow.id;
      nameCell.append(name, document.createElement("br"), id);
      const policy = flow.retryPolicy || {};
      const actions = document.createElement("td");
      actions.className = "row-actions";
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = "Edit";
      edit.disabled = !(flow.permissions && flow.permissions.update);
      edit.addEventListener("click", () => startEdit(flow.id));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger";
      remove.textContent = "Delete";
      remove.disabled = !(flow.permissions && flow.permissions.delete);
      remove.addEventListener("click", () => deleteFlow(flow.id, flow.name));
      actions.append(edit, " ", remove);
      row.append(
        nameCell,
        describeRef(flow.source || {}),
        describeRef(flow.destination || {}),
        textCell(policy.maxAttempts + " attempts, " + policy.backoffSeconds + " s backoff"),
        textCell(formatTime(flow.updatedAt), "muted when"),
        actions,
      );
      return row;
    });
    $("flow-rows").replaceChildren(...rows);
    $("no-flows").hidden = items.length > 0;
    $("next-page").hidden = !state.nextCursor;
    $("first-page").hidden = !state.cursor;
  }

  // --- create, edit, delete ---------------------------------------------------------------------

  function integerOrRaw(input) {
    // An unreadable number goes to the BFF as typed, so its field error explains what is wrong.
    const raw = input.value.trim();
    return /^-?\d+$/.test(raw) ? Number(raw) : raw;
  }

  function formBody() {
    return {
      name: $("flow-name").value,
      sourceId: $("flow-source").value || null,
      destinationId: $("flow-destination").value || null,
      retryPolicy: {
        maxAttempts: integerOrRaw($("flow-max-attempts")),
        backoffSeconds: integerOrRaw($("flow-backoff")),
      },
    };
  }

  function resetForm() {
    $("flow-form").reset();
    const defaults = state.options && state.options.defaults && state.options.defaults.retryPolicy;
    $("flow-max-attempts").value = defaults ? defaults.maxAttempts : 3;
    $("flow-backoff").value = defaults ? defaults.backoffSeconds : 10;
  }

  function cancelEdit() {
    state.editing = null;
    $("form-title").textContent = "New flow";
    $("flow-submit").textContent = "Create flow";
    $("flow-cancel").hidden = true;
    resetForm();
  }

  async function startEdit(flowId) {
    clearProblem();
    const generation = state.generation;
    try {
      const { data, etag } = await api("GET", clusterPath() + "/delivery-flows/" + enc(flowId));
      if (generation !== state.generation) return;
      state.editing = { id: data.id, etag };
      $("form-title").textContent = "Edit flow " + data.id;
      $("flow-submit").textContent = "Save changes";
      $("flow-cancel").hidden = false;
      $("flow-name").value = data.name;
      $("flow-source").value = data.source.id;
      $("flow-destination").value = data.destination.id;
      $("flow-max-attempts").value = data.retryPolicy.maxAttempts;
      $("flow-backoff").value = data.retryPolicy.backoffSeconds;
      $("flow-name").focus();
    } catch (err) {
      showProblem(err);
    }
  }

  function createKeyFor(body) {
    const text = JSON.stringify(body);
    if (!state.pendingCreate || state.pendingCreate.body !== text) {
      state.pendingCreate = { body: text, key: "console-" + crypto.randomUUID() };
    }
    return state.pendingCreate.key;
  }

  async function submitFlow(event) {
    event.preventDefault();
    clearProblem();
    const body = formBody();
    const editing = state.editing;
    $("flow-submit").disabled = true;
    try {
      if (editing) {
        const headers = editing.etag ? { "If-Match": editing.etag } : {};
        const { data } = await api("PUT", clusterPath() + "/delivery-flows/" + enc(editing.id),
          { body, headers });
        cancelEdit();
        setStatus("Saved flow “" + data.name + "”.");
        await reloadFlows(state.cursor);
      } else {
        // One key per flow being created: a retry after a failure (a timeout, say) sends the
        // same key, so the flow is created once; a changed form is a new flow, with a new key.
        const { data } = await api("POST", clusterPath() + "/delivery-flows",
          { body, headers: { "Idempotency-Key": createKeyFor(body) } });
        state.pendingCreate = null;
        resetForm();
        setStatus("Created flow “" + data.name + "”.");
        await reloadFlows(null);
      }
    } catch (err) {
      showProblem(err);
    } finally {
      $("flow-submit").disabled = false;
    }
  }

  async function deleteFlow(flowId, name) {
    if (!window.confirm("Delete flow “" + name + "” (" + flowId + ")?")) return;
    clearProblem();
    try {
      const path = clusterPath() + "/delivery-flows/" + enc(flowId);
      const { etag } = await api("GET", path);
      await api("DELETE", path, { headers: etag ? { "If-Match": etag } : {} });
      if (state.editing && state.editing.id === flowId) cancelEdit();
      setStatus("Deleted flow “" + name + "”.");
      await reloadFlows(state.cursor);
    } catch (err) {
      showProblem(err);
    }
  }

  // --- wiring -----------------------------------------------------------------------------------

  function start() {
    $("sign-in").href = LOGIN_URL;
    $("sign-out").addEventListener("click", signOut);
    $("tenant").addEventListener("change", (e) => selectTenant(e.target.value));
    $("cluster").addEventListener("change", (e) => selectCluster(e.target.value));
    $("next-page").addEventListener("click", () => reloadFlows(state.nextCursor));
    $("first-page").addEventListener("click", () => reloadFlows(null));
    $("flow-form").addEventListener("submit", submitFlow);
    $("flow-cancel").addEventListener("click", () => { clearProblem(); cancelEdit(); });
    $("sessions").addEventListener("toggle", () => { if ($("sessions").open) loadSessions(); });
    $("sign-out-everywhere").addEventListener("click", signOutEverywhere);
    loadSession();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
