// keyway settings page. The server renders everything; this script keeps the cards
// current (server-sent events), sends the forms with fetch, and drives the dialogs.
"use strict";
(() => {
  document.documentElement.classList.add("js");
  const $ = (sel, root = document) => root.querySelector(sel);
  const csrf = $('meta[name="csrf-token"]').content;
  const cards = $("#cards");
  const notice = $("#notice");
  let flows = {};
  const cardOf = (el) => el.closest(".card");

  const say = (text, bad = false) => {
    notice.textContent = text;
    notice.classList.toggle("bad", bad);
  };

  async function send(path, data, method = "POST") {
    const init = {
      method,
      headers: { Accept: "application/json", "X-CSRF-Token": csrf },
      credentials: "same-origin",
    };
    if (data) init.body = new URLSearchParams(data);
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      return { ok: false, body: { error: "keyway ui is not answering: is it still running?" } };
    }
    let body = {};
    try {
      body = await resp.json();
    } catch (e) {
      body = { error: `unexpected answer (HTTP ${resp.status})` };
    }
    return { ok: resp.ok, body };
  }
  const problem = (b) => (b.hint ? `${b.error} (${b.hint})` : b.error || "failed");

  // A tab opened in the click itself (so no popup blocker stops it), pointed at the
  // authorization page once keyway knows it.
  function prepareTab() {
    const tab = window.open("about:blank", "_blank");
    if (tab) tab.opener = null;
    return tab;
  }
  function sendTab(tab, flow) {
    if (!tab) return;
    const to = flow && (flow.url || (flow.device && flow.device.link));
    if (to) tab.location.href = to;
    else tab.close();
  }

  // ---- live cards -------------------------------------------------------------
  function replaceCards(html) {
    // Keep what is being typed into a card, and where the focus is (by id, or by
    // the card and the button's action).
    const active = document.activeElement;
    const inCards = active && cards.contains(active);
    const focusId = inCards ? active.id : null;
    const focusCard = inCards ? cardOf(active)?.dataset.id : null;
    const focusAct = inCards ? active.closest("form")?.dataset.act : null;
    const typed = {};
    cards.querySelectorAll("input[id]").forEach((i) => {
      if (i.type === "checkbox") typed[i.id] = i.checked;
      else if (i.value) typed[i.id] = i.value;
    });
    cards.innerHTML = html;
    for (const [id, v] of Object.entries(typed)) {
      const i = document.getElementById(id);
      if (!i) continue;
      if (i.type === "checkbox") i.checked = v;
      else i.value = v;
    }
    if (focusId) document.getElementById(focusId)?.focus();
    else if (focusCard) {
      const card = document.getElementById(`card-${focusCard}`);
      const again = card?.querySelector(`form[data-act="${focusAct}"] button`) || card?.querySelector("button");
      again?.focus();
    }
  }
  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("cards", (ev) => {
      const data = JSON.parse(ev.data);
      flows = data.flows || {};
      replaceCards(data.html);
      const running = Object.values(flows).some((f) => f.phase === "starting" || f.phase === "authorizing");
      if (!running && notice.textContent.startsWith("Authorizing")) say("");
      addDialog.flowChanged();
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        say("keyway ui stopped: run keyway ui again to reopen the page", true);
      }
    };
  }

  // ---- card actions -------------------------------------------------------------
  // Remove asks in a dialog: the form's own confirmation box is for pages without
  // JavaScript, so its check must not stop the click.
  cards.addEventListener("click", (ev) => {
    const button = ev.target.closest(".act-remove");
    const card = button && cardOf(button);
    if (!card) return;
    ev.preventDefault();
    removeDialog.ask(card.dataset.id, card.dataset.name);
  });
  cards.addEventListener("submit", async (ev) => {
    const form = ev.target;
    const act = form.dataset.act;
    const card = cardOf(form);
    if (!card || !act) return;
    ev.preventDefault();
    const id = card.dataset.id;
    const name = card.dataset.name;
    const base = `/servers/${encodeURIComponent(id)}`;
    if (act === "remove") return removeDialog.ask(id, name);
    if (act === "tools") return toolsDialog.show(id, name);
    if (act === "authorize") {
      const tab = prepareTab();
      say(`Authorizing ${name}…`);
      const r = await send(`${base}/authorize`, {});
      if (!r.ok) {
        sendTab(tab, null);
        return say(problem(r.body), true);
      }
      sendTab(tab, r.body.flow);
      return;
    }
    if (act === "token") {
      const token = form.querySelector('input[name="token"]').value;
      say(`Trying the new token on ${name}…`);
      const r = await send(`${base}/token`, { token });
      if (!r.ok) return say(problem(r.body), true);
      form.reset();
      return say(r.body.tools !== undefined ? `${name}: token saved, ${r.body.tools} tools` : `${name}: token saved (${r.body.note})`);
    }
    if (act === "cancel") {
      const r = await send(`${base}/cancel`, {});
      return say(r.ok ? `${name}: authorization cancelled` : problem(r.body), !r.ok);
    }
    if (act === "enable" || act === "disable") {
      const r = await send(`${base}/${act}`, {});
      return say(r.ok ? `${name} ${act}d` : problem(r.body), !r.ok);
    }
  });

  // ---- remove -------------------------------------------------------------------
  const removeDialog = (() => {
    const dlg = $("#remove-dialog");
    let target = null;
    $("#remove-cancel").addEventListener("click", () => dlg.close());
    $("#remove-confirm").addEventListener("click", async () => {
      const { id, name } = target;
      dlg.close();
      const r = await send(`/servers/${encodeURIComponent(id)}/remove`, { confirm: "yes" });
      say(r.ok ? `removed ${name}${r.body.revocation ? ` (${r.body.revocation})` : ""}` : problem(r.body), !r.ok);
      $("#add-open").focus();
    });
    return {
      ask(id, name) {
        target = { id, name };
        $("#remove-text").textContent = `${name} and its credentials will be removed; OAuth tokens are revoked at the authorization server.`;
        dlg.showModal();
        $("#remove-cancel").focus();
      },
    };
  })();

  // ---- tools --------------------------------------------------------------------
  const toolsDialog = (() => {
    const dlg = $("#tools-dialog");
    const list = $("#tools-list");
    $("#tools-close").addEventListener("click", () => dlg.close());
    const el = (tag, props = {}, ...kids) => {
      const e = Object.assign(document.createElement(tag), props);
      for (const k of kids) e.append(k);
      return e;
    };
    return {
      async show(id, name) {
        $("#tools-title").textContent = `${name}: tools`;
        list.textContent = "Listing tools…";
        dlg.showModal();
        $("#tools-close").focus();
        const r = await send(`/servers/${encodeURIComponent(id)}/tools`, null, "GET");
        if (!r.ok) {
          list.textContent = problem(r.body);
          return;
        }
        list.textContent = "";
        if (!r.body.tools.length) list.textContent = "This server has no tools.";
        r.body.tools.forEach((t, n) => {
          const argsId = `call-args-${n}`;
          const out = el("pre", { hidden: true });
          const args = el("textarea", { id: argsId, name: "arguments", value: "{}", spellcheck: false });
          const form = el(
            "form",
            {},
            el("label", { htmlFor: argsId, textContent: "Arguments (JSON)" }),
            args,
            el("button", { type: "submit", textContent: `Call ${t.name}` }),
            out,
          );
          form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            out.hidden = false;
            out.textContent = "Calling…";
            const c = await send(`/servers/${encodeURIComponent(id)}/call`, { tool: t.name, arguments: args.value });
            if (!c.ok) {
              out.textContent = problem(c.body);
              return;
            }
            const res = c.body.result || {};
            const text = (res.content || []).filter((x) => x.type === "text").map((x) => x.text).join("\n");
            out.textContent = (res.isError ? "The tool reported an error:\n" : "") + (text || JSON.stringify(res, null, 2));
          });
          list.append(el("section", { className: "tool" }, el("h3", { textContent: t.name }), el("p", { textContent: t.description || "" }), form));
        });
      },
    };
  })();

  // ---- add ----------------------------------------------------------------------
  const addDialog = (() => {
    const dlg = $("#add-dialog");
    const form = $("#add-form");
    const url = $("#add-url");
    const name = $("#add-name");
    const token = $("#add-token");
    const transport = $("#add-transport");
    const result = $("#probe-result");
    const save = $("#add-save");
    const both = $("#add-authorize");
    const PROBE_DELAY_MS = 700;
    let timer = null;
    let inflight = null; // AbortController of the probe under way
    let seq = 0; // only the probe with the current number may show its result
    let found = null; // the current probe's result
    let nameEdited = false;
    let flowId = null; // the Add & Authorize under way
    let busy = false;

    const el = (tag, text) => Object.assign(document.createElement(tag), { textContent: text });
    function show(cls, title, lines = [], list = []) {
      result.dataset.class = cls;
      result.textContent = "";
      if (title) result.append(el("h3", title));
      for (const l of lines) if (l) result.append(el("p", l));
      if (list.length) {
        const ul = document.createElement("ul");
        for (const x of list) ul.append(el("li", x));
        result.append(ul);
      }
    }
    function buttons() {
      const c = found && found.class;
      save.disabled = busy || !(c === "open" || c === "oauth");
      save.textContent = c === "oauth" ? "Add without authorizing" : "Add";
      both.hidden = c !== "oauth";
      both.disabled = busy;
      save.classList.toggle("primary", c === "open");
    }
    function invalidate() {
      seq += 1;
      found = null;
      clearTimeout(timer);
      timer = null;
      if (inflight) inflight.abort();
      inflight = null;
      buttons();
    }
    // The token goes only to a URL that has shown itself to be an MCP server asking
    // for one (never to a half-typed address): a URL edit probes without it.
    let withToken = false;
    function schedule(tokenToo = false) {
      invalidate();
      withToken = tokenToo;
      if (!url.value.trim()) {
        show("", "", ["Type the server's URL: keyway checks what it takes to get in."]);
        return;
      }
      show("pending", "", ["Waiting for you to finish typing…"]);
      timer = setTimeout(probeNow, PROBE_DELAY_MS);
    }
    async function probeNow(tokenToo = withToken) {
      invalidate();
      withToken = tokenToo;
      const mine = seq;
      const ctl = new AbortController();
      inflight = ctl;
      const target = url.value.trim();
      show("pending", "Checking…", [target]);
      let resp;
      let body;
      try {
        resp = await fetch("/probe", {
          method: "POST",
          headers: { Accept: "application/json", "X-CSRF-Token": csrf },
          body: new URLSearchParams({ url: target, token: withToken ? token.value : "", transport: transport.value }),
          signal: ctl.signal,
        });
        body = await resp.json();
      } catch (e) {
        if (mine !== seq) return; // overtaken or cancelled
        show("error", "Error", ["keyway ui did not answer the probe."]);
        return;
      }
      if (mine !== seq) return; // an edit came after it started: not ours to show
      inflight = null;
      if (!resp.ok) {
        show("invalid", "Not a server URL", [problem(body)]);
        return;
      }
      const asks = ["oauth", "token-only", "token-rejected"].includes(body.class);
      if (!withToken && token.value && asks) {
        // This URL is an MCP server asking for credentials: try the token typed.
        withToken = true;
        return probeNow(true);
      }
      found = body;
      if (!nameEdited) name.value = body.name;
      const lines = [body.detail];
      const list = [];
      if (body.class === "open") {
        lines.unshift(`${body.tools.length} tools${body.protocol ? `, MCP ${body.protocol}` : ""}.`);
        list.push(...body.tools.slice(0, 8));
        if (body.tools.length > 8) list.push(`and ${body.tools.length - 8} more`);
      } else if (body.class === "oauth") {
        const how = body.registration.length
          ? `keyway will register as: ${body.registration.join(", ").replace("dcr", "dynamic registration").replace("cimd", "client ID metadata document")}`
          : "";
        lines.push(how);
        if (body.device) lines.push("The server also offers the device grant.");
      } else {
        lines.push(`Next: ${body.next_step}`);
      }
      list.push(...body.problems);
      show(body.class, body.title, lines, list);
      buttons();
    }
    function reset() {
      invalidate();
      // Closing the dialog during Add & Authorize gives the add up: nothing is saved.
      if (flowId && flows[flowId] && !["authorized", "declined", "failed"].includes(flows[flowId].phase)) {
        send(`/servers/${encodeURIComponent(flowId)}/cancel`, {}).then((r) => r.ok && say("add cancelled: nothing was saved"));
      }
      form.reset();
      nameEdited = false;
      flowSeen = false;
      withToken = false;
      flowId = null;
      busy = false;
      result.textContent = "";
      delete result.dataset.class;
      buttons();
    }
    async function add(authorize) {
      if (busy) return;
      busy = true;
      buttons();
      const tab = authorize ? prepareTab() : null;
      show("pending", authorize ? "Adding and authorizing…" : "Adding…", [url.value.trim()]);
      const r = await send("/add", {
        url: url.value.trim(),
        name: name.value.trim(),
        token: token.value,
        transport: transport.value,
        authorize: authorize ? "1" : "0",
      });
      if (!r.ok) {
        sendTab(tab, null);
        busy = false;
        show("error", "Not added", [problem(r.body)]);
        buttons();
        return;
      }
      if (r.body.added) {
        sendTab(tab, null);
        say(`added ${r.body.added.name}`);
        dlg.close();
        return;
      }
      flowId = r.body.id;
      if (r.body.flow) flows[flowId] = r.body.flow;
      sendTab(tab, r.body.flow);
      flowChanged();
    }
    let flowSeen = false;
    function flowChanged() {
      if (!flowId) return;
      const f = flows[flowId];
      if (!f) {
        // Gone after it was seen: not an OAuth server after all, and added.
        if (flowSeen) {
          flowId = null;
          say("added");
          dlg.close();
        }
        return;
      }
      flowSeen = true;
      if (f.phase === "authorized") {
        say("added and authorized");
        flowId = null;
        dlg.close();
      } else if (f.phase === "declined" || f.phase === "failed") {
        busy = false;
        show("error", f.phase === "declined" ? "Authorization declined" : "Authorization failed", [f.reason, "Nothing was saved."]);
        flowId = null;
        buttons();
      } else if (f.device) {
        show("oauth", "Enter the code", [`Code: ${f.device.user_code}`, `at ${f.device.verification_uri}`]);
        signinLink(f.device.link, "Open the verification page");
      } else if (f.url) {
        show("oauth", "Waiting for the sign-in…", ["Finish signing in in the tab that opened."]);
        signinLink(f.url, "Open the sign-in page again");
      } else {
        show("pending", "Authorizing…", ["Finding the authorization server and registering."]);
      }
    }
    function signinLink(href, text) {
      if (!href) return;
      const p = document.createElement("p");
      const a = Object.assign(document.createElement("a"), { href, textContent: text, target: "_blank", rel: "noopener noreferrer" });
      p.append(a);
      result.append(p);
    }

    url.addEventListener("input", () => schedule(false));
    token.addEventListener("input", () => url.value.trim() && found && schedule(true));
    transport.addEventListener("change", () => url.value.trim() && schedule(false));
    name.addEventListener("input", () => (nameEdited = name.value.trim() !== ""));
    save.addEventListener("click", () => add(false));
    both.addEventListener("click", () => add(true));
    $("#add-cancel").addEventListener("click", () => dlg.close());
    dlg.addEventListener("close", reset); // Escape too: pending probes are cancelled
    // Enter in a field submits the form (it has no submit button of its own).
    form.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.isComposing && ev.target.tagName === "INPUT") {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    // Enter: the next sensible step.
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (busy) return;
      const c = found && found.class;
      if (c === "open") return add(false);
      if (c === "oauth") return add(true);
      if (c === "token-only" || c === "token-rejected") return token.focus();
      if (!url.value.trim()) return url.focus();
      probeNow();
    });
    $("#add-open").addEventListener("click", () => {
      reset();
      dlg.showModal();
      url.focus();
    });
    return { flowChanged };
  })();

  // Relative times stay true without a reload.
  setInterval(() => {
    const now = Date.now() / 1000;
    document.querySelectorAll(".expires[data-at]").forEach((e) => {
      const d = Math.round(Number(e.dataset.at) - now);
      const a = Math.abs(d);
      const span = a < 60 ? `${a} s` : a < 3600 ? `${Math.floor(a / 60)} min` : a < 86400 ? `${Math.floor(a / 3600)} h` : `${Math.floor(a / 86400)} d`;
      e.textContent = d >= 0 ? `in ${span}` : `${span} ago`;
    });
  }, 30000);

  connect();
})();
