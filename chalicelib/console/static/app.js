/* Berth console: a few pages over the management API (/v2/_berth/api/), no framework.
 *
 * Session: a bearer token from the registry's token endpoint (scope berth:api:*), kept in
 * sessionStorage and sent in the Authorization header. No cookies, so no CSRF surface.
 * Every page is built with DOM calls (textContent), never innerHTML with data. */
"use strict";

const API = "/v2/_berth/api";
const TOKEN_URL = "/v2/_berth/token";
const HOST = location.host;
const DESCRIPTION_MAX = 1000;
const main = document.getElementById("main");
let me = null;                 // {username, admin, namespaces}
let currentNamespace = null;

/* ---------------------------------------------------------------- small DOM helpers */

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function render(...nodes) {
  main.replaceChildren(...nodes);
}

function toast(message) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2200);
}

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
  return (unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)) + " " + units[unit];
}

function ago(seconds) {
  if (!seconds) return "never";
  const diff = Date.now() / 1000 - seconds;
  if (diff < 45) return "just now";
  const steps = [[60, "minute"], [3600, "hour"], [86400, "day"], [2592000, "month"], [31536000, "year"]];
  let label = "minute", size = 60;
  for (const [s, name] of steps) { if (diff >= s) { size = s; label = name; } }
  const n = Math.max(1, Math.round(diff / size));
  return `${n} ${label}${n === 1 ? "" : "s"} ago`;
}

function timeEl(seconds) {
  if (!seconds) return h("span", {class: "faint"}, "never");
  const date = new Date(seconds * 1000);
  return h("time", {datetime: date.toISOString(), title: date.toLocaleString()}, ago(seconds));
}

function shortDigest(digest) {
  const [alg, hex] = digest.split(":");
  return `${alg}:${(hex || "").slice(0, 10)}`;
}

/* ---------------------------------------------------------------- session and API */

const session = {
  get token() { return sessionStorage.getItem("berth.token"); },
  get username() { return sessionStorage.getItem("berth.user"); },
  valid() {
    const exp = Number(sessionStorage.getItem("berth.expires") || 0);
    return Boolean(this.token) && exp > Date.now() / 1000 + 10;
  },
  save(username, answer) {
    sessionStorage.setItem("berth.token", answer.token);
    sessionStorage.setItem("berth.user", username);
    sessionStorage.setItem("berth.expires", String(Date.now() / 1000 + (answer.expires_in || 300)));
  },
  clear() {
    for (const k of ["berth.token", "berth.user", "berth.expires"]) sessionStorage.removeItem(k);
    me = null;
  },
};

function sentence(text) {
  text = String(text || "");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

class ApiError extends Error {
  constructor(status, error) {
    super(sentence(error.message || `request failed (${status})`));
    this.status = status;
    this.code = error.code || "ERROR";
    this.field = error.field || null;
  }
}

async function api(method, path, body) {
  const headers = {"Authorization": `Bearer ${session.token}`};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {method, headers, credentials: "omit",
                                        body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    throw new ApiError(0, {code: "NETWORK", message: "The registry could not be reached. Check your connection and try again."});
  }
  let doc = null;
  try { doc = await response.json(); } catch (e) { doc = null; }
  if (response.status === 401) {
    session.clear();
    go("#/signin", "Your session has ended. Sign in again.");
    const ended = new ApiError(401, (doc && doc.error) || {message: "Sign in again."});
    ended.handled = true;           // the sign-in page is showing: nothing more to say
    throw ended;
  }
  if (!response.ok) {
    const error = (doc && doc.error) || (doc && doc.errors && doc.errors[0]) ||
      {code: "HTTP_" + response.status, message: `The registry answered ${response.status}.`};
    throw new ApiError(response.status, error);
  }
  return doc;
}

async function signIn(username, password) {
  const url = `${TOKEN_URL}?service=berth&scope=${encodeURIComponent("berth:api:*")}`;
  let response;
  try {
    response = await fetch(url, {headers: {"Authorization": "Basic " + btoa(unescape(encodeURIComponent(`${username}:${password}`)))},
                                 credentials: "omit"});
  } catch (e) {
    throw new ApiError(0, {message: "The registry could not be reached."});
  }
  let doc = null;
  try { doc = await response.json(); } catch (e) { doc = null; }
  if (!response.ok) {
    const err = doc && doc.errors && doc.errors[0];
    let message = err ? err.message : `Sign-in failed (${response.status}).`;
    if (response.status === 401) message = "Incorrect user name or password, or the account is disabled.";
    throw new ApiError(response.status, {message, field: response.status === 401 ? "password" : null});
  }
  const claims = JSON.parse(atob(doc.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  if (!(claims.access || []).some(a => a.type === "berth" && a.name === "api")) {
    throw new ApiError(403, {message: "Sign in with your password: access tokens are for docker login only.", field: "password"});
  }
  session.save(username, doc);
}

/* ---------------------------------------------------------------- forms */

function field(label, input, hint) {
  const id = input.id || (input.id = "f-" + Math.random().toString(36).slice(2, 9));
  const error = h("div", {class: "field-error", id: id + "-error", hidden: true});
  input.setAttribute("aria-describedby", id + "-error");
  input.addEventListener("input", () => { error.hidden = true; input.removeAttribute("aria-invalid"); });
  return h("div", {class: "field", "data-field": input.name},
    h("label", {for: id}, label, hint ? h("span", {class: "hint"}, " ", hint) : null),
    input, error);
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach(e => { e.hidden = true; e.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach(e => e.removeAttribute("aria-invalid"));
  const top = form.querySelector(".form-error");
  if (top) { top.hidden = true; top.textContent = ""; }
}

/* Show an API error next to the input it is about, or at the top of the form. */
function showError(form, error) {
  const input = error.field && form.querySelector(`[name="${CSS.escape(error.field)}"]`);
  if (input) {
    const box = document.getElementById(input.id + "-error");
    box.textContent = error.message;
    box.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  let top = form.querySelector(".form-error");
  if (!top) { top = h("div", {class: "form-error", role: "alert"}); form.prepend(top); }
  top.textContent = error.message;
  top.hidden = false;
}

/* Wire a form: Enter submits (native), the button is disabled while the call runs. */
function onSubmit(form, handler) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const buttons = form.querySelectorAll("button[type=submit]");
    buttons.forEach(b => b.disabled = true);
    try {
      await handler(new FormData(form));
    } catch (error) {
      if (!error.handled) showError(form, error);
    } finally {
      buttons.forEach(b => b.disabled = false);
    }
  });
  return form;
}

function counter(textarea) {
  const out = h("span", {class: "counter", "aria-live": "polite"});
  const update = () => {
    out.textContent = `${textarea.value.length} / ${DESCRIPTION_MAX}`;
    out.classList.toggle("over", textarea.value.length > DESCRIPTION_MAX);
  };
  textarea.addEventListener("input", update);
  update();
  return out;
}

/* ---------------------------------------------------------------- copy */

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const area = h("textarea", {"aria-hidden": "true"});
    area.value = text;
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  document.body.dataset.copied = text;
}

function copyButton(text, className, label) {
  const button = h("button", {type: "button", class: className, "aria-label": `Copy: ${text}`,
                              "data-copy": text}, label || "Copy");
  button.addEventListener("click", async () => {
    await copyText(text);
    button.textContent = "Copied";
    button.classList.add("copied");
    toast("Copied to the clipboard");
    setTimeout(() => { button.textContent = label || "Copy"; button.classList.remove("copied"); }, 1500);
  });
  return button;
}

function command(text) {
  return h("div", {class: "cmd"}, h("code", {}, text), copyButton(text, "copy"));
}

/* ---------------------------------------------------------------- dialog */

/* A modal dialog: Escape or Cancel closes it (resolving false), the confirm button runs
 * `action` (errors are shown inside the dialog). */
function confirmDialog({title, body, confirmLabel, danger, action}) {
  return new Promise((resolve) => {
    const error = h("div", {class: "form-error", role: "alert", hidden: true});
    const cancel = h("button", {type: "button", class: "btn"}, "Cancel");
    const ok = h("button", {type: "submit", class: danger ? "btn btn-danger" : "btn btn-primary"}, confirmLabel);
    const titleId = "d-" + Math.random().toString(36).slice(2, 8);
    const form = h("form", {method: "dialog"},
      h("div", {class: "dialog-head"}, h("h2", {id: titleId}, title)),
      h("div", {class: "dialog-body"}, error, body),
      h("div", {class: "dialog-foot"}, cancel, ok));
    const dialog = h("dialog", {"aria-labelledby": titleId}, form);
    let done = false;
    const finish = (value) => { if (!done) { done = true; dialog.close(); dialog.remove(); resolve(value); } };
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); finish(false); });   // Escape
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      ok.disabled = true;
      error.hidden = true;
      try {
        await action();
        finish(true);
      } catch (err) {
        if (err.handled) { finish(false); return; }
        error.textContent = err.message;
        error.hidden = false;
        ok.disabled = false;
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

function formDialog({title, fields, submitLabel, action}) {
  return new Promise((resolve) => {
    const cancel = h("button", {type: "button", class: "btn"}, "Cancel");
    const titleId = "d-" + Math.random().toString(36).slice(2, 8);
    const form = h("form", {novalidate: true},
      h("div", {class: "dialog-head"}, h("h2", {id: titleId}, title)),
      h("div", {class: "dialog-body"}, fields),
      h("div", {class: "dialog-foot"}, cancel,
        h("button", {type: "submit", class: "btn btn-primary"}, submitLabel)));
    const dialog = h("dialog", {"aria-labelledby": titleId}, form);
    let done = false;
    const finish = (value) => { if (!done) { done = true; dialog.close(); dialog.remove(); resolve(value); } };
    cancel.addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); finish(null); });
    onSubmit(form, async (data) => finish(await action(data)));
    document.body.append(dialog);
    dialog.showModal();
    const first = form.querySelector("input, textarea");
    if (first) first.focus();
  });
}

/* ---------------------------------------------------------------- chrome */

function setChrome(active) {
  const signedIn = Boolean(me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  if (signedIn) {
    document.getElementById("who-name").textContent = me.username + (me.admin ? " (admin)" : "");
    document.getElementById("nav-users").hidden = !me.admin;
  }
  document.querySelectorAll("[data-nav]").forEach(a => {
    a.classList.toggle("active", a.dataset.nav === active);
    if (a.dataset.nav === active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
}

function pageHead(title, sub, actions, crumbs) {
  return h("div", {class: "page-head"},
    h("div", {},
      crumbs ? h("div", {class: "crumbs"}, crumbs) : null,
      h("h1", {}, title),
      sub ? h("p", {class: "sub"}, sub) : null),
    actions ? h("div", {class: "actions"}, actions) : null);
}

function failure(error, retry) {
  return h("div", {class: "panel"}, h("div", {class: "empty"},
    h("div", {class: "icon", "aria-hidden": "true"}, "!"),
    h("h2", {}, "Something went wrong"),
    h("p", {}, error.message),
    retry ? h("button", {type: "button", class: "btn", onclick: retry}, "Try again") : null));
}

/* ---------------------------------------------------------------- sign in and activation */

let flash = null;

function go(hash, message) {
  flash = message || null;
  if (location.hash === hash) route(); else location.hash = hash;
}

function signInPage() {
  setChrome(null);
  const username = h("input", {type: "text", name: "username", autocomplete: "username", required: true, autocapitalize: "off", spellcheck: "false"});
  const password = h("input", {type: "password", name: "password", autocomplete: "current-password", required: true});
  const form = h("form", {class: "panel-body", novalidate: true},
    flash ? h("div", {class: "notice", role: "status"}, flash) : null,
    field("User name", username),
    field("Password", password),
    h("button", {type: "submit", class: "btn btn-primary btn-block"}, "Sign in"));
  flash = null;
  onSubmit(form, async (data) => {
    const name = String(data.get("username")).trim();
    if (!name) throw new ApiError(400, {message: "Enter your user name.", field: "username"});
    if (!data.get("password")) throw new ApiError(400, {message: "Enter your password.", field: "password"});
    await signIn(name, String(data.get("password")));
    me = await api("GET", "/me");
    go(me.namespaces.length ? "#/" : "#/activate");
  });
  render(h("div", {class: "narrow"},
    h("h1", {}, "Sign in to Berth"),
    h("p", {class: "sub"}, `Use the user name and password you log in to ${HOST} with.`),
    h("div", {class: "panel"}, form)));
  username.focus();
}

function activatePage() {
  setChrome(null);
  const name = h("input", {type: "text", name: "name", autocapitalize: "off", spellcheck: "false",
                           placeholder: me.username.replace(/[^a-z0-9]+/g, "") || "team"});
  const form = h("form", {class: "panel-body", novalidate: true},
    field("Namespace", name, "— lowercase letters and digits; the first part of your image names"),
    h("p", {class: "hint"}, "Your images will be ", h("span", {class: "mono"}, `${HOST}/<namespace>/<image>:<tag>`), ". The name cannot be changed later."),
    h("button", {type: "submit", class: "btn btn-primary btn-block"}, "Activate"));
  onSubmit(form, async (data) => {
    const value = String(data.get("name")).trim();
    if (!value) throw new ApiError(400, {message: "Choose a namespace.", field: "name"});
    await api("POST", "/namespaces", {name: value});
    me = await api("GET", "/me");
    currentNamespace = value;
    toast(`Namespace ${value} is yours`);
    go("#/");
  });
  render(h("div", {class: "narrow"},
    h("h1", {}, "Activate the registry"),
    h("p", {class: "sub"}, `Welcome, ${me.username}. Choose a namespace to push your images to.`),
    h("div", {class: "panel"}, form)));
  name.focus();
}

/* ---------------------------------------------------------------- image list */

function pushHowTo(namespace, repo) {
  const target = `${HOST}/${namespace}/${repo || "my-image"}:latest`;
  return h("div", {class: "cmds"},
    h("div", {class: "cmd-label"}, "Log in with your user name and password (or an access token)"),
    command(`docker login ${HOST}`),
    h("div", {class: "cmd-label"}, "Tag a local image (replace my-image:latest with yours)"),
    command(`docker tag my-image:latest ${target}`),
    h("div", {class: "cmd-label"}, "Push it"),
    command(`docker push ${target}`));
}

async function newRepositoryDialog(namespace) {
  const name = h("input", {type: "text", name: "name", autocapitalize: "off", spellcheck: "false", placeholder: "my-app"});
  const description = h("textarea", {name: "description", rows: 4, placeholder: "What this image is for"});
  const namespaceSelect = h("select", {name: "namespace"},
    me.namespaces.filter(n => n.role !== "pull").map(n => h("option", {value: n.name, selected: n.name === namespace}, n.name)));
  const descField = field("Description", description, "— optional");
  descField.querySelector("label").append(counter(description));
  const fields = [
    field("Namespace", namespaceSelect),
    field("Name", name, "— lowercase letters, digits, '.', '_', '-' and '/'"),
    descField,
    h("div", {class: "field"}, h("label", {}, "Visibility"),
      h("div", {class: "radios"},
        h("label", {}, h("input", {type: "radio", name: "visibility", value: "private", checked: true}), "Private"),
        h("label", {}, h("input", {type: "radio", name: "visibility", value: "public"}), "Public (anyone may pull)"))),
  ];
  const created = await formDialog({
    title: "New repository", fields, submitLabel: "Create repository",
    action: async (data) => {
      const short = String(data.get("name")).trim();
      if (!short) throw new ApiError(400, {message: "Give the repository a name.", field: "name"});
      const text = String(data.get("description"));
      if (text.length > DESCRIPTION_MAX) throw new ApiError(400, {message: `The description is ${text.length} characters long; the limit is ${DESCRIPTION_MAX}.`, field: "description"});
      try {
        return await api("POST", "/repositories", {name: `${data.get("namespace")}/${short}`, description: text, visibility: data.get("visibility")});
      } catch (error) {
        if (error.field === "name" && error.code !== "ALREADY_EXISTS" && error.code !== "NAME_INVALID" && error.status === 403) error.field = "namespace";
        throw error;
      }
    },
  });
  if (created) {
    toast(`Created ${created.name}`);
    go(`#/repo/${created.name}`);
  }
}

async function imagesPage() {
  setChrome("images");
  const writable = me.namespaces.filter(n => n.role !== "pull");
  if (!currentNamespace || !me.namespaces.some(n => n.name === currentNamespace)) {
    currentNamespace = (me.namespaces[0] || {}).name || null;
  }
  const newButton = h("button", {type: "button", class: "btn btn-primary", disabled: !writable.length,
                                 onclick: () => newRepositoryDialog(currentNamespace)}, "+ New repository");
  const search = h("input", {type: "search", name: "q", placeholder: "Search images by name", "aria-label": "Search images"});
  const nsSelect = me.namespaces.length > 1 ? h("select", {"aria-label": "Namespace"},
    me.namespaces.map(n => h("option", {value: n.name, selected: n.name === currentNamespace}, n.name))) : null;
  const results = h("div", {"aria-live": "polite"}, h("div", {class: "loading"}, "Loading images…"));
  const panel = h("div", {class: "panel"},
    h("div", {class: "toolbar"}, nsSelect, search),
    results);
  render(pageHead("Images", `Repositories in ${HOST}/${currentNamespace}`, newButton), panel);
  const head = main.querySelector(".page-head .sub");

  let generation = 0;
  async function load(cursor, append) {
    const mine = ++generation;
    const params = new URLSearchParams({namespace: currentNamespace, limit: "20"});
    if (search.value.trim()) params.set("q", search.value.trim());
    if (cursor) params.set("cursor", cursor);
    let page;
    try {
      page = await api("GET", "/repositories?" + params);
    } catch (error) {
      if (!error.handled) results.replaceChildren(failure(error, () => load(cursor, append)));
      return;
    }
    if (mine !== generation) return;
    const rows = page.repositories.map(repoRow);
    let table = append ? results.querySelector("tbody") : null;
    if (!append) {
      if (!rows.length) {
        results.replaceChildren(search.value.trim()
          ? h("div", {class: "empty"}, h("h3", {}, "No images match"), h("p", {}, `Nothing in ${currentNamespace} has “${search.value.trim()}” in its name.`))
          : h("div", {class: "empty"},
              h("div", {class: "icon", "aria-hidden": "true"}, "⬡"),
              h("h2", {}, "No images yet"),
              h("p", {}, "Create a repository to describe your image, or push one: it appears here on its first push."),
              writable.length ? h("button", {type: "button", class: "btn btn-primary", onclick: () => newRepositoryDialog(currentNamespace)}, "+ New repository") : null,
              pushHowTo(currentNamespace)));
        return;
      }
      table = h("tbody");
      results.replaceChildren(h("table", {},
        h("thead", {}, h("tr", {},
          h("th", {scope: "col"}, "Repository"), h("th", {scope: "col", class: "num"}, "Tags"),
          h("th", {scope: "col", class: "num"}, "Size"), h("th", {scope: "col"}, "Last push"),
          h("th", {scope: "col"}, h("span", {class: "visually-hidden"}, "Pull")))),
        table));
    }
    table.append(...rows);
    const old = results.querySelector(".more");
    if (old) old.remove();
    if (page.next_cursor) {
      results.append(h("div", {class: "more"}, h("button", {type: "button", class: "btn", onclick: (e) => { e.target.disabled = true; load(page.next_cursor, true); }}, "Load more")));
    }
  }

  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => load(null, false), 250); });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { clearTimeout(timer); load(null, false); } });
  if (nsSelect) nsSelect.addEventListener("change", () => {
    currentNamespace = nsSelect.value;
    head.textContent = `Repositories in ${HOST}/${currentNamespace}`;
    load(null, false);
  });
  await load(null, false);
}

function repoRow(repo) {
  return h("tr", {"data-repo": repo.name},
    h("td", {},
      h("a", {class: "repo-name", href: `#/repo/${repo.name}`}, repo.name), " ",
      h("span", {class: `badge badge-${repo.visibility}`}, repo.visibility),
      h("div", {class: repo.description ? "repo-desc" : "repo-desc none", title: repo.description || null},
        repo.description || "No description")),
    h("td", {class: "num", "data-col": "tags"}, String(repo.tag_count)),
    h("td", {class: "num", "data-col": "size"}, formatSize(repo.size)),
    h("td", {}, timeEl(repo.last_push)),
    h("td", {class: "num"}, repo.tag_count ? copyButton(repo.pull_command, "copy-inline", "Copy pull") : null));
}

/* ---------------------------------------------------------------- repository page */

async function repositoryPage(name) {
  setChrome("images");
  render(h("div", {class: "loading"}, "Loading…"));
  let repo, tags;
  try {
    [repo, tags] = await Promise.all([
      api("GET", `/repositories/${name}`),
      api("GET", `/repositories/${name}/_tags?limit=100`)]);
  } catch (error) {
    if (error.handled) return;
    render(pageHead(name, null, null, h("a", {href: "#/"}, "← Images")),
           failure(error.status === 404 ? new Error(`There is no repository ${name}, or you may not see it.`) : error,
                   error.status === 404 ? null : () => repositoryPage(name)));
    return;
  }
  const ref = `${HOST}/${repo.name}`;
  const tag = repo.latest_tag || "latest";

  /* description, editable */
  const descBox = h("div", {class: "panel-body"});
  function showDescription() {
    descBox.replaceChildren(h("p", {class: repo.description ? "description" : "description none"},
      repo.description || "No description yet."));
  }
  function editDescription() {
    const area = h("textarea", {name: "description", rows: 5});
    area.value = repo.description;
    const f = field("Description", area);
    f.querySelector("label").append(counter(area));
    const cancel = h("button", {type: "button", class: "btn", onclick: showDescription}, "Cancel");
    const form = h("form", {novalidate: true}, f,
      h("div", {class: "inline-form"}, h("button", {type: "submit", class: "btn btn-primary"}, "Save"), cancel));
    area.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); showDescription(); editButton.focus(); }
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit();
    });
    onSubmit(form, async (data) => {
      const text = String(data.get("description"));
      if (text.length > DESCRIPTION_MAX) throw new ApiError(400, {message: `The description is ${text.length} characters long; the limit is ${DESCRIPTION_MAX}.`, field: "description"});
      repo = await api("PATCH", `/repositories/${repo.name}`, {description: text});
      showDescription();
      toast("Description saved");
      editButton.focus();
    });
    descBox.replaceChildren(form);
    area.focus();
  }
  const editButton = h("button", {type: "button", class: "btn btn-small", onclick: editDescription}, "Edit");
  showDescription();

  /* tags */
  const tagBody = h("tbody");
  const tagPanelBody = h("div", {});
  function fillTags() {
    tagBody.replaceChildren(...tags.tags.map(tagRow));
    if (!tags.tags.length) {
      tagPanelBody.replaceChildren(h("div", {class: "empty"},
        h("h3", {}, "No tags"),
        h("p", {}, "Push an image to this repository and its tags appear here."),
        pushHowTo(repo.namespace, repo.name.slice(repo.namespace.length + 1))));
    } else {
      tagPanelBody.replaceChildren(h("table", {},
        h("thead", {}, h("tr", {},
          h("th", {scope: "col"}, "Tag"), h("th", {scope: "col"}, "Digest"),
          h("th", {scope: "col", class: "num"}, "Size"), h("th", {scope: "col"}, "Pushed"),
          h("th", {scope: "col", class: "num"}, "Actions"))),
        tagBody));
    }
  }
  function tagRow(t) {
    const del = tags.can_delete ? h("button", {type: "button", class: "btn btn-small btn-danger-quiet",
      "aria-label": `Delete tag ${t.name}`, onclick: () => deleteTag(t)}, "Delete") : null;
    return h("tr", {"data-tag": t.name},
      h("td", {},
        h("span", {class: "mono repo-name"}, t.name), " ",
        t.kind !== "image" ? h("span", {class: "badge badge-kind"}, t.kind === "index" ? "multi-arch" : t.kind) : null,
        t.platforms.length ? h("div", {class: "platforms"}, t.platforms.map(p => h("span", {class: "platform"}, p))) : null),
      h("td", {}, h("span", {class: "mono muted", title: t.digest}, shortDigest(t.digest))),
      h("td", {class: "num", "data-col": "size"}, formatSize(t.size)),
      h("td", {}, timeEl(t.pushed)),
      h("td", {class: "num"}, h("span", {class: "row-actions"}, copyButton(t.pull_command, "copy-inline", "Copy pull"), del)));
  }
  async function deleteTag(t) {
    const others = tags.tags.filter(x => x.digest === t.digest && x.name !== t.name).map(x => x.name);
    const ok = await confirmDialog({
      title: `Delete tag ${t.name}?`, danger: true, confirmLabel: "Delete tag",
      body: [h("p", {}, "The tag ", h("strong", {class: "mono"}, `${repo.name}:${t.name}`), " will no longer resolve."),
             h("p", {class: "muted"}, others.length ? `The image stays reachable through ${others.join(", ")}.` : `The image (${shortDigest(t.digest)}) stays reachable by digest until it is cleaned up.`)],
      action: () => api("DELETE", `/repositories/${repo.name}/_tags/${encodeURIComponent(t.name)}`),
    });
    if (ok) {
      toast(`Deleted tag ${t.name}`);
      repositoryPage(repo.name);
    }
  }
  fillTags();

  async function deleteImage() {
    const names = tags.tags.map(t => t.name);
    const ok = await confirmDialog({
      title: `Delete ${repo.name}?`, danger: true, confirmLabel: "Delete image",
      body: [h("p", {}, "This permanently deletes the repository ", h("strong", {class: "mono"}, repo.name), " and everything in it:"),
             h("ul", {class: "goes"},
               names.length ? names.map(n => h("li", {class: "mono"}, `${repo.name}:${n}`)) : h("li", {}, "no tags"),
               h("li", {}, `${repo.manifest_count} manifest${repo.manifest_count === 1 ? "" : "s"} (${formatSize(repo.size)})`),
               repo.description ? h("li", {}, "its description") : null),
             h("p", {class: "muted"}, "Pulls of these tags will fail. This cannot be undone.")],
      action: async () => {
        let answer;
        do { answer = await api("DELETE", `/repositories/${repo.name}`); } while (answer && answer.complete === false);
      },
    });
    if (ok) {
      toast(`Deleted ${repo.name}`);
      go("#/");
    }
  }

  const title = h("span", {class: "repo-title"},
    h("span", {class: "ns"}, repo.namespace + "/"), repo.name.slice(repo.namespace.length + 1), " ",
    h("span", {class: `badge badge-${repo.visibility}`}, repo.visibility),
    repo.namespace_public && repo.visibility === "private" ? [" ", h("span", {class: "badge badge-public"}, "namespace public")] : null);
  render(
    pageHead(title, null, null, h("a", {href: "#/"}, "← Images")),
    h("div", {class: "facts"},
      h("div", {class: "fact"}, h("div", {class: "k"}, "Tags"), h("div", {class: "v", "data-fact": "tags"}, String(repo.tag_count))),
      h("div", {class: "fact"}, h("div", {class: "k"}, "Size"), h("div", {class: "v", "data-fact": "size"}, formatSize(repo.size))),
      h("div", {class: "fact"}, h("div", {class: "k"}, "Last push"), h("div", {class: "v"}, timeEl(repo.last_push))),
      h("div", {class: "fact"}, h("div", {class: "k"}, "Your access"), h("div", {class: "v"}, repo.role || "pull"))),
    h("div", {class: "grid"},
      h("div", {},
        h("section", {class: "panel", "aria-labelledby": "about"},
          h("div", {class: "panel-head"}, h("h2", {id: "about"}, "About"),
            repo.can_edit ? h("div", {class: "actions"}, editButton) : null),
          descBox),
        h("section", {class: "panel", "aria-labelledby": "tags-h"},
          h("div", {class: "panel-head"}, h("h2", {id: "tags-h"}, "Tags"),
            h("span", {class: "faint"}, tags.next_cursor ? "first 100" : `${tags.tags.length}`)),
          tagPanelBody)),
      h("div", {},
        h("section", {class: "panel", "aria-labelledby": "use"},
          h("div", {class: "panel-head"}, h("h2", {id: "use"}, "Use this image")),
          h("div", {class: "panel-body"},
            h("div", {class: "cmd-label"}, "Pull"),
            command(`docker pull ${ref}:${tag}`),
            h("div", {class: "cmd-label"}, "Log in"),
            command(`docker login ${HOST}`),
            h("div", {class: "cmd-label"}, "Tag a local image"),
            command(`docker tag my-image:latest ${ref}:${tag}`),
            h("div", {class: "cmd-label"}, "Push"),
            command(`docker push ${ref}:${tag}`))),
        repo.can_delete ? h("section", {class: "panel danger-zone", "aria-labelledby": "danger"},
          h("div", {class: "panel-head"}, h("h2", {id: "danger"}, "Danger zone")),
          h("div", {class: "panel-body danger-row"},
            h("p", {}, "Delete every tag and manifest of this image."),
            h("button", {type: "button", class: "btn btn-danger", onclick: deleteImage}, "Delete image"))) : null)));
}

/* ---------------------------------------------------------------- account */

async function accountPage() {
  setChrome("account");
  const current = h("input", {type: "password", name: "current_password", autocomplete: "current-password"});
  const next = h("input", {type: "password", name: "new_password", autocomplete: "new-password"});
  const again = h("input", {type: "password", name: "again", autocomplete: "new-password"});
  const pwForm = h("form", {class: "panel-body", novalidate: true},
    field("Current password", current), field("New password", next, "— at least 8 characters"),
    field("New password again", again),
    h("button", {type: "submit", class: "btn btn-primary"}, "Change password"));
  onSubmit(pwForm, async (data) => {
    if (data.get("new_password") !== data.get("again")) throw new ApiError(400, {message: "The two new passwords differ.", field: "again"});
    await api("PUT", "/me/password", {current_password: data.get("current_password"), new_password: data.get("new_password")});
    pwForm.reset();
    toast("Password changed");
  });

  const tokenList = h("div", {}, h("div", {class: "loading"}, "Loading tokens…"));
  const tokenName = h("input", {type: "text", name: "name", placeholder: "e.g. ci-deploy"});
  const tokenScope = h("select", {name: "scope"}, h("option", {value: "pull"}, "pull"), h("option", {value: "push"}, "push (and pull)"));
  const secretBox = h("div", {});
  const tokenForm = h("form", {class: "panel-body", novalidate: true},
    h("div", {class: "inline-form"}, field("Token name", tokenName), field("Scope", tokenScope),
      h("button", {type: "submit", class: "btn btn-primary"}, "Create token")),
    secretBox);
  onSubmit(tokenForm, async (data) => {
    const name = String(data.get("name")).trim();
    if (!name) throw new ApiError(400, {message: "Name the token after where it is used.", field: "name"});
    const created = await api("POST", "/me/tokens", {name, scope: data.get("scope")});
    tokenForm.reset();
    secretBox.replaceChildren(h("div", {class: "secret"},
      h("div", {class: "notice"}, `Copy the token “${created.name}” now: it is not shown again. Use it as the password of docker login ${HOST} -u ${me.username}.`),
      command(created.secret)));
    loadTokens();
  });

  async function loadTokens() {
    let answer;
    try { answer = await api("GET", "/me/tokens"); } catch (error) {
      if (!error.handled) tokenList.replaceChildren(failure(error, loadTokens));
      return;
    }
    const live = answer.tokens.filter(t => !t.revoked);
    if (!live.length) {
      tokenList.replaceChildren(h("div", {class: "empty"}, h("h3", {}, "No access tokens"),
        h("p", {}, "Create one for CI or a server: it logs in to the registry only, with pull or push rights, and can be revoked at any time.")));
      return;
    }
    tokenList.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Name"), h("th", {scope: "col"}, "Scope"),
        h("th", {scope: "col"}, "Created"), h("th", {scope: "col"}, "Last used"), h("th", {scope: "col", class: "num"}, "Actions"))),
      h("tbody", {}, live.map(t => h("tr", {"data-token": t.name},
        h("td", {class: "repo-name"}, t.name), h("td", {}, h("span", {class: "badge"}, t.scope)),
        h("td", {}, timeEl(t.created)), h("td", {}, timeEl(t.last_used)),
        h("td", {class: "num"}, h("button", {type: "button", class: "btn btn-small btn-danger-quiet", "aria-label": `Revoke token ${t.name}`,
          onclick: async () => {
            const ok = await confirmDialog({title: `Revoke ${t.name}?`, danger: true, confirmLabel: "Revoke",
              body: h("p", {}, "Logins with this token stop working at once."),
              action: () => api("DELETE", `/me/tokens/${t.id}`)});
            if (ok) { toast(`Revoked ${t.name}`); loadTokens(); }
          }}, "Revoke")))))));
  }

  const nsName = h("input", {type: "text", name: "name", autocapitalize: "off", spellcheck: "false"});
  const nsForm = h("form", {class: "panel-body", novalidate: true},
    h("div", {class: "inline-form"}, field("Add a namespace", nsName),
      h("button", {type: "submit", class: "btn"}, "Activate")));
  onSubmit(nsForm, async (data) => {
    const value = String(data.get("name")).trim();
    if (!value) throw new ApiError(400, {message: "Choose a namespace.", field: "name"});
    await api("POST", "/namespaces", {name: value});
    me = await api("GET", "/me");
    toast(`Namespace ${value} is yours`);
    accountPage();
  });

  render(pageHead("Account", `Signed in as ${me.username}`),
    h("div", {class: "grid"},
      h("div", {},
        h("section", {class: "panel", "aria-labelledby": "tokens-h"},
          h("div", {class: "panel-head"}, h("h2", {id: "tokens-h"}, "Access tokens")),
          tokenForm, tokenList)),
      h("div", {},
        h("section", {class: "panel", "aria-labelledby": "pw-h"},
          h("div", {class: "panel-head"}, h("h2", {id: "pw-h"}, "Password")), pwForm),
        h("section", {class: "panel", "aria-labelledby": "ns-h"},
          h("div", {class: "panel-head"}, h("h2", {id: "ns-h"}, "Namespaces")),
          h("table", {}, h("tbody", {}, me.namespaces.map(n => h("tr", {},
            h("td", {class: "mono"}, n.name), h("td", {}, h("span", {class: "badge"}, n.role)),
            h("td", {class: "num"}, h("span", {class: n.public ? "badge badge-public" : "badge badge-private"}, n.public ? "public" : "private")))))),
          nsForm))));
  loadTokens();
}

/* ---------------------------------------------------------------- users (admin) */

async function usersPage() {
  setChrome("users");
  if (!me.admin) { render(failure(new Error("Only administrators manage users."))); return; }
  const list = h("div", {}, h("div", {class: "loading"}, "Loading users…"));
  const username = h("input", {type: "text", name: "username", autocapitalize: "off", spellcheck: "false"});
  const password = h("input", {type: "password", name: "password", autocomplete: "new-password"});
  const form = h("form", {class: "panel-body", novalidate: true},
    h("div", {class: "inline-form"}, field("User name", username), field("Initial password", password),
      h("button", {type: "submit", class: "btn btn-primary"}, "Create user")));
  onSubmit(form, async (data) => {
    const created = await api("POST", "/users", {username: String(data.get("username")).trim(), password: data.get("password")});
    form.reset();
    toast(`Created ${created.username}`);
    load();
  });
  async function load() {
    let answer;
    try { answer = await api("GET", "/users?limit=200"); } catch (error) {
      if (!error.handled) list.replaceChildren(failure(error, load));
      return;
    }
    list.replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "User"), h("th", {scope: "col"}, "Role"),
        h("th", {scope: "col"}, "Created"), h("th", {scope: "col", class: "num"}, "Actions"))),
      h("tbody", {}, answer.users.map(u => h("tr", {"data-user": u.username},
        h("td", {class: "repo-name"}, u.username, u.disabled ? [" ", h("span", {class: "badge"}, "disabled")] : null),
        h("td", {}, u.admin ? h("span", {class: "badge badge-kind"}, "admin") : "user"),
        h("td", {}, timeEl(u.created)),
        h("td", {class: "num"}, u.username === me.username ? h("span", {class: "faint"}, "you") :
          h("button", {type: "button", class: u.disabled ? "btn btn-small" : "btn btn-small btn-danger-quiet",
            onclick: async () => {
              try {
                await api("PATCH", `/users/${encodeURIComponent(u.username)}`, {disabled: !u.disabled});
                toast(`${u.disabled ? "Enabled" : "Disabled"} ${u.username}`);
                load();
              } catch (error) { if (!error.handled) toast(error.message); }
            }}, u.disabled ? "Enable" : "Disable")))))));
  }
  render(pageHead("Users", "Everyone who may log in to this registry"),
    h("section", {class: "panel"}, h("div", {class: "panel-head"}, h("h2", {}, "New user")), form),
    h("section", {class: "panel"}, list));
  load();
}

/* ---------------------------------------------------------------- official images (mirrors) */

/* "Official images": what each mirror rule cached, the pull commands, docker's registry-mirrors
 * snippet; admins add, replace and remove rules. GET/PUT/DELETE /mirrors (api/manage/mirrors.py). */
async function officialPage() {
  setChrome("official");
  const body = h("div", {}, h("div", {class: "loading"}, "Loading mirrors…"));
  render(pageHead("Official images", "Pull-through caches of other registries: the first pull fetches upstream, later ones come from here"), body);
  let answer;
  try { answer = await api("GET", "/mirrors"); } catch (error) {
    if (!error.handled) body.replaceChildren(failure(error, officialPage));
    return;
  }
  const snippet = JSON.stringify(answer.daemon_json, null, 2);
  const rules = answer.mirrors.map(m => h("section", {class: "panel", "data-mirror": m.namespace},
    h("div", {class: "panel-head"}, h("h2", {}, `${m.namespace}/`), " ",
      h("span", {class: "faint"}, `← ${m.upstream}/${m.prefix}`), " ",
      h("span", {class: m.public ? "badge badge-public" : "badge badge-private"}, m.public ? "public" : "private"),
      m.can_edit ? h("button", {type: "button", class: "btn btn-small btn-danger-quiet", "aria-label": `Remove the rule ${m.namespace}`,
        onclick: async () => {
          const ok = await confirmDialog({title: `Remove the rule ${m.namespace}?`, danger: true, confirmLabel: "Remove",
            body: h("p", {}, "Pulls stop reaching the upstream; what was cached stays until evicted."),
            action: () => api("DELETE", `/mirrors/${m.namespace}`)});
          if (ok) { toast(`Removed ${m.namespace}`); officialPage(); }
        }}, "Remove") : null),
    m.images.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Image"), h("th", {scope: "col"}, "Tags"),
        h("th", {scope: "col", class: "num"}, "Size"), h("th", {scope: "col"}, "Fetched from upstream"),
        h("th", {scope: "col"}, "Pull"))),
      h("tbody", {}, m.images.map(i => h("tr", {"data-image": i.name},
        h("td", {class: "repo-name"}, i.name), h("td", {class: "mono"}, i.tags.join(", ")),
        h("td", {class: "num"}, formatSize(i.size)), h("td", {}, timeEl(i.last_fetched)),
        h("td", {}, command(i.pull_command))))))
      : h("p", {class: "panel-body faint"}, `Nothing cached yet: docker pull ${HOST}/${m.namespace}/<image>:<tag>`)));
  const parts = [h("section", {class: "panel"}, h("div", {class: "panel-head"}, h("h2", {}, "docker's registry-mirrors")),
    h("div", {class: "panel-body"}, h("p", {}, "Put this in /etc/docker/daemon.json and restart dockerd: docker pull alpine:3 then comes through Berth."),
      h("pre", {class: "mono", "data-snippet": "daemon.json"}, snippet), copyButton(snippet, "btn btn-small")))].concat(rules);
  if (me.admin) {
    const input = (name, attrs) => h("input", Object.assign({type: "text", name, autocapitalize: "off", spellcheck: "false"}, attrs || {}));
    const form = h("form", {class: "panel-body", novalidate: true},
      h("div", {class: "inline-form"}, field("Namespace", input("namespace")), field("Upstream", input("upstream", {placeholder: "https://registry-1.docker.io"})),
        field("Upstream prefix", input("prefix", {placeholder: "library/"})), field("Tag TTL", input("tag_ttl", {value: "10m"})),
        h("label", {}, h("input", {type: "checkbox", name: "public"}), " public"),
        h("button", {type: "submit", class: "btn btn-primary"}, "Save rule")));
    onSubmit(form, async (data) => {
      const ns = String(data.get("namespace")).trim();
      if (!ns) throw new ApiError(400, {message: "Choose a namespace.", field: "namespace"});
      await api("PUT", `/mirrors/${encodeURIComponent(ns)}`, {upstream: String(data.get("upstream")).trim(),
        prefix: String(data.get("prefix")).trim(), tag_ttl: String(data.get("tag_ttl")).trim(), public: data.get("public") === "on"});
      toast(`Saved the rule ${ns}`);
      officialPage();
    });
    parts.push(h("section", {class: "panel"}, h("div", {class: "panel-head"}, h("h2", {}, "Add or replace a rule")), form));
  }
  body.replaceChildren(...parts);
}

/* ---------------------------------------------------------------- router */

async function route() {
  const hash = location.hash || "#/";
  if (hash === "#/signin" || !session.valid()) {
    if (hash !== "#/signin") { session.clear(); flash = flash || null; }
    me = null;
    signInPage();
    if (hash !== "#/signin") history.replaceState(null, "", "#/signin");
    return;
  }
  if (!me) {
    try { me = await api("GET", "/me"); } catch (error) {
      if (!error.handled) render(failure(error, route));
      return;
    }
  }
  if (!me.namespaces.length && !["#/account", "#/users", "#/official"].includes(hash)) { activatePage(); return; }
  if (hash === "#/activate") { activatePage(); return; }
  main.focus({preventScroll: true});
  if (hash.startsWith("#/repo/")) return repositoryPage(decodeURIComponent(hash.slice(7)));
  if (hash === "#/account") return accountPage();
  if (hash === "#/users") return usersPage();
  if (hash === "#/official") return officialPage();
  return imagesPage();
}

document.getElementById("signout").addEventListener("click", () => { session.clear(); go("#/signin", "You are signed out."); });
window.addEventListener("hashchange", route);
route();
