// The privet dashboard: asks for an API key, keeps it in sessionStorage, renders /v1/dashboard.
// Every value from the server is written with textContent (never innerHTML): nothing it holds can run as markup.
"use strict";

(() => {
  const STORAGE = "privet.dashboard.key";
  const TABLES = ["models-table", "keys-table", "budgets-table", "audit-table"];
  const $ = (id) => document.getElementById(id);
  let generation = 0; // answers to an older load (another key) are dropped

  const dash = "—";
  const time = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, " UTC") : dash);
  const num = (value, digits) => (value === null || value === undefined ? dash : Number(value).toFixed(digits));
  const list = (items) => (items === null || items === undefined ? "all" : items.join(", ") || "none");
  const keyId = (token) => token.split("_")[1] || "";

  function fill(tableId, rows, columns) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const cell = body.insertRow().insertCell();
      cell.colSpan = columns.length;
      cell.className = "empty";
      cell.textContent = "none";
      return;
    }
    for (const row of rows) {
      const tr = body.insertRow();
      for (const [value, className] of columns) {
        const cell = tr.insertCell();
        cell.textContent = String(value(row));
        const cls = typeof className === "function" ? className(row) : className;
        if (cls) cell.className = cls;
      }
    }
  }

  function clear() {
    $("data").hidden = true;
    for (const id of TABLES) $(id).tBodies[0].replaceChildren();
    for (const id of ["chain-status", "chain-detail", "audit-problem"]) $(id).textContent = "";
    $("chain-status").className = "chain";
    $("whoami").textContent = "Not signed in.";
  }

  function say(text, kind) {
    const message = $("message");
    message.textContent = text;
    message.className = kind || "";
    message.hidden = !text;
  }

  function render(data) {
    $("whoami").textContent = `Tenant ${data.tenant} · role ${data.role} · ${data.subject}`;
    const chain = data.chain;
    const status = $("chain-status");
    if (chain === null) {
      status.className = "chain pending";
      status.textContent = "Audit chain: verification in progress";
      $("chain-detail").textContent = "A long chain takes a while to verify; refresh in a moment.";
    } else {
      status.className = chain.ok ? "chain ok" : "chain broken";
      status.textContent = chain.ok ? "✔ Audit chain intact" : `✘ Audit chain BROKEN: ${chain.problem || "see privet audit verify"}`;
      $("chain-detail").textContent =
        `${chain.records} records, ${chain.checkpoints} checkpoints verified; ${chain.unsigned} records not yet ` +
        `signed by a checkpoint. Checked ${time(chain.checked_at)} (the chain of every tenant).`;
    }

    fill("models-table", data.models, [
      [(m) => m.name], [(m) => m.version], [(m) => m.digest, "mono"], [(m) => m.signer, "mono"],
      [(m) => m.problem || m.status, (m) => (m.status === "refused" ? "bad" : m.status === "loaded" ? "good" : "")],
      [(m) => (m.callable ? "yes" : "no")],
    ]);
    fill("keys-table", data.keys, [
      [(k) => k.key_id, "mono"], [(k) => k.role], [(k) => list(k.models)], [(k) => k.label || dash],
      [(k) => time(k.created_at)],
      [(k) => (k.expires_at ? `${time(k.expires_at)}${k.expired ? " (expired)" : ""}` : "never"), (k) => (k.expired ? "bad" : "")],
      [(k) => (k.revoked ? time(k.revoked_at) : "no"), (k) => (k.revoked ? "bad" : "")],
      [(k) => k.limits.rate ?? "none"], [(k) => k.limits.burst ?? dash],
      [(k) => (k.limits.budget_queries === null ? "none" : `${k.limits.budget_queries} / ${k.limits.budget_window} s`)],
    ]);
    fill("budgets-table", data.budgets, [
      [(b) => b.dataset], [(b) => num(b.spent_epsilon, 3)], [(b) => num(b.epsilon, 3)],
      [(b) => num(b.remaining_epsilon, 3), (b) => (b.remaining_epsilon <= 0 ? "bad" : "")],
      [(b) => b.delta], [(b) => b.charges], [(b) => b.accountant],
    ]);
    fill("audit-table", data.audit, [
      [(a) => a.seq], [(a) => time(a.at)], [(a) => a.principal || dash, "mono"], [(a) => a.route],
      [(a) => a.model || dash], [(a) => a.decision, (a) => (a.decision === "allowed" ? "" : "bad")],
      [(a) => a.status], [(a) => num(a.latency_ms, 1)],
      [(a) => Object.entries(a.entities).map(([kind, n]) => `${kind} ${n}`).join(", ") || dash],
    ]);
    const problem = $("audit-problem");
    problem.textContent = data.audit_problem ? `The newest records could not be read: ${data.audit_problem}` : "";
    problem.hidden = !data.audit_problem;
    $("data").hidden = false;
  }

  function refusal(status, error) {
    const detail = error && error.message ? ` (${error.message})` : "";
    if (status === 401) return `This API key was not accepted${detail}. Enter a valid key.`;
    if (status === 403) {
      return `This key may not view the dashboard${detail}. Use a key with the operator, auditor or admin role.`;
    }
    if (status === 429) return `Too many requests${detail}. Try again shortly.`;
    return `The gateway answered ${status}${detail}.`;
  }

  async function load() {
    const token = sessionStorage.getItem(STORAGE);
    const mine = ++generation;
    clear();
    $("refresh").disabled = $("forget").disabled = !token;
    if (!token) {
      say("Enter an API key to see the dashboard.", "info");
      return;
    }
    say(`Loading with key ${keyId(token)}…`, "info");
    let response, body;
    try {
      response = await fetch("v1/dashboard", {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      if (mine === generation) say("The gateway could not be reached.", "");
      return;
    }
    if (mine !== generation) return;
    if (!response.ok) {
      if (response.status === 401 || response.status === 403) {
        sessionStorage.removeItem(STORAGE); // a key that cannot show the dashboard is not kept
        $("refresh").disabled = $("forget").disabled = true;
      }
      say(refusal(response.status, body && body.error), "");
      return;
    }
    say("", "");
    render(body);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("api-key");
      const token = input.value.trim();
      input.value = "";
      if (token) sessionStorage.setItem(STORAGE, token);
      load();
    });
    $("refresh").addEventListener("click", load);
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(STORAGE);
      load();
    });
    load();
  });
})();
