/* Berth console: a few pages over the management API (/v2/_berth/api/), no framework.
 *
 * Session: POST /v2/_berth/api/session sets an HttpOnly, SameSite=Strict cookie (scripts never
 * see the token, so an injected script could not steal it) that the browser keeps across reloads
 * and tabs for its hour; every API call adds the X-Berth-Console header, without which the
 * cookie counts for nothing (a cross-site form or image cannot add it: no CSRF).
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

async function request(method, path, body) {
  const headers = {"X-Berth-Console": "1"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {method, headers, credentials: "same-origin",
                                        body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    throw new ApiError(0, {code: "NETWORK", message: "The registry could not be reached. Check your connection and try again."});
  }
  let doc = null;
  try { doc = await response.json(); } catch (e) { doc = null; }
  if (!response.ok) {
    const error = (doc && doc.error) || (doc && doc.errors && doc.errors[0]) ||
      {code: "HTTP_" + response.status, message: `The registry answered ${response.status}.`};
    throw new ApiError(response.status, error);
  }
  return doc;
}

/* A call as the signed-in user: when the session has ended, the sign-in page replaces the page
 * and the address stays, so signing in again comes back to it. */
async function api(method, path, body) {
  try {
    return await request(method, path, body);
  } catch (error) {
    if (error.status === 401 && me) {
      me = null;
      flash = "Your session has ended. Sign in again.";
      signInPage();
      error.handled = true;
    }
    throw error;
  }
}

async function signIn(username, password) {
  try {
    await request("POST", "/session", {username, password});
  } catch (error) {
    if (error.status === 401) error.message = "Incorrect user name or password, or the account is disabled.";
    throw error;
  }
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

/* One command on one line (no wrapping inside a word or a reference): a long one scrolls in its
 * own box, which the keyboard can reach (tabindex) to scroll it. */
function command(text) {
  return h("div", {class: "cmd"}, h("code", {tabindex: "0"}, text), copyButton(text, "copy"));
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

const NAMESPACE_HINT = "lowercase letters (a-z) and digits, optionally separated by '.', '_', '__' or '-'; at most 64 characters";
let signupMode = null;         // closed | invite | open, from GET /signup

async function newcomerHint() {
  const box = h("p", {class: "newcomer"});
  if (signupMode === null) {
    try { signupMode = (await request("GET", "/signup")).mode; } catch (e) { signupMode = "closed"; }
  }
  if (signupMode === "open") box.append("New here? ", h("a", {href: "#/signup"}, "Create an account"), " — your user name, password and namespace in one step.");
  else if (signupMode === "invite") box.append("Invited? ", h("a", {href: "#/signup"}, "Sign up with your invitation code"), ". No invitation? Ask an administrator of this registry.");
  else box.append(`No account yet? Accounts on ${HOST} are created by its administrators: ask one for a user name and password.`);
  return box;
}

/* The sign-in page replaces whatever page was asked for, and the address stays: after signing
 * in, that page opens (deep links survive sign-in). */
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
    const hash = location.hash;
    if (!hash || hash === "#/signin" || hash === "#/signup") go("#/"); else route();
  });
  const hint = h("div", {});
  render(h("div", {class: "narrow"},
    h("h1", {}, "Sign in to Berth"),
    h("p", {class: "sub"}, `Use the user name and password you log in to ${HOST} with.`),
    h("div", {class: "panel"}, form), hint));
  newcomerHint().then(box => hint.replaceChildren(box));
  username.focus();
}

/* Sign-up is activation for a newcomer: user name, registry password and namespace together. */
async function signUpPage() {
  setChrome(null);
  if (signupMode === null) await newcomerHint();
  if (signupMode === "closed") {
    render(h("div", {class: "narrow"}, h("h1", {}, "Sign-up is closed"),
      h("p", {class: "sub"}, `Accounts on ${HOST} are created by its administrators: ask one for a user name and password.`),
      h("p", {}, h("a", {href: "#/signin"}, "Back to sign in"))));
    return;
  }
  const inputs = {
    username: h("input", {type: "text", name: "username", autocomplete: "username", autocapitalize: "off", spellcheck: "false"}),
    password: h("input", {type: "password", name: "password", autocomplete: "new-password"}),
    again: h("input", {type: "password", name: "again", autocomplete: "new-password"}),
    namespace: h("input", {type: "text", name: "namespace", autocapitalize: "off", spellcheck: "false"}),
    invite: h("input", {type: "text", name: "invite", autocomplete: "off", spellcheck: "false"}),
  };
  inputs.username.addEventListener("input", () => {
    if (!inputs.namespace.dataset.touched) inputs.namespace.value = inputs.username.value.toLowerCase().replace(/[^a-z0-9._-]+/g, "");
  });
  inputs.namespace.addEventListener("input", () => { inputs.namespace.dataset.touched = "1"; });
  const form = h("form", {class: "panel-body", novalidate: true},
    signupMode === "invite" ? field("Invitation code", inputs.invite) : null,
    field("User name", inputs.username, "— for the console and docker login"),
    field("Registry password", inputs.password, "— at least 8 characters; docker login uses it"),
    field("Password again", inputs.again),
    field("Namespace", inputs.namespace, `— ${NAMESPACE_HINT}`),
    h("p", {class: "hint"}, "Your images will be ", h("span", {class: "mono nowrap"}, `${HOST}/<namespace>/<image>:<tag>`), ". The namespace cannot be changed later."),
    h("button", {type: "submit", class: "btn btn-primary btn-block"}, "Create account"));
  onSubmit(form, async (data) => {
    const body = {username: String(data.get("username")).trim(), password: String(data.get("password")),
                  namespace: String(data.get("namespace")).trim()};
    if (!body.username) throw new ApiError(400, {message: "Choose a user name.", field: "username"});
    if (body.password !== data.get("again")) throw new ApiError(400, {message: "The two passwords differ.", field: "again"});
    if (!body.namespace) throw new ApiError(400, {message: "Choose a namespace.", field: "namespace"});
    if (signupMode === "invite") body.invite = String(data.get("invite")).trim();
    await request("POST", "/signup", body);
    me = await api("GET", "/me");
    toast(`Welcome, ${me.username}`);
    go("#/");
  });
  render(h("div", {class: "narrow"},
    h("h1", {}, "Create your account"),
    h("p", {class: "sub"}, `One step: your user name and registry password for ${HOST}, and the namespace your images go to.`),
    h("div", {class: "panel"}, form),
    h("p", {class: "newcomer"}, "Already have an account? ", h("a", {href: "#/signin"}, "Sign in"))));
  (signupMode === "invite" ? inputs.invite : inputs.username).focus();
}

/* Activation of a signed-in user who has no namespace yet, in one form: the namespace, the user
 * name docker login takes (the account's own), and the registry password: the current one, or a
 * new one (e.g. replacing the initial password an administrator gave). */
function activatePage() {
  setChrome(null);
  const name = h("input", {type: "text", name: "name", autocapitalize: "off", spellcheck: "false",
                           value: me.username.replace(/[^a-z0-9._-]+/g, "")});
  const user = h("input", {type: "text", name: "login", readonly: true, value: me.username});
  const current = h("input", {type: "password", name: "current_password", autocomplete: "current-password"});
  const fresh = h("input", {type: "password", name: "new_password", autocomplete: "new-password"});
  const form = h("form", {class: "panel-body", novalidate: true},
    field("Namespace", name, `— ${NAMESPACE_HINT}`),
    field("User name for docker login", user, "— your account's"),
    field("Registry password", current, "— the one you signed in with"),
    field("New registry password", fresh, "— optional, at least 8 characters: replaces it for docker login and this console"),
    h("p", {class: "hint"}, "Your images will be ",
      h("span", {class: "mono nowrap"}, `${HOST}/<namespace>/<image>:<tag>`), ". The namespace cannot be changed later."),
    h("button", {type: "submit", class: "btn btn-primary btn-block"}, "Activate"));
  onSubmit(form, async (data) => {
    const value = String(data.get("name")).trim();
    const password = String(data.get("current_password")), next = String(data.get("new_password"));
    if (!value) throw new ApiError(400, {message: "Choose a namespace.", field: "name"});
    if (next && !password) throw new ApiError(400, {message: "Enter your current password to set a new one.", field: "current_password"});
    if (next && next.length < 8) throw new ApiError(400, {message: "The new password must have at least 8 characters.", field: "new_password"});
    try {
      await api("POST", "/namespaces", {name: value});
    } catch (error) {      // made by an earlier try whose password step failed: go on
      if (error.code !== "ALREADY_EXISTS" || !(await api("GET", "/me")).namespaces.some(n => n.name === value)) throw error;
    }
    if (next) {
      // a password change ends every session: open a new one with the new password
      await api("PUT", "/me/password", {current_password: password, new_password: next});
      await signIn(me.username, next);
    }
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

/* ---- commands users paste */

const PLAIN_HTTP = location.protocol === "http:";

function loginCommand() {
  return `docker login --username=${me.username} ${HOST}`;
}

/* A tag that does not exist yet, so that pasting the tag and push commands never replaces an
 * image by accident: the newest tag's trailing number plus one (v1.4 -> v1.5), else v1, v2, … */
function proposeTag(latest, existing) {
  const taken = new Set(existing);
  if (!latest) return "latest";
  const m = /^(.*?)(\d+)$/.exec(latest);
  let prefix = m ? m[1] : "v", n = m ? Number(m[2]) + 1 : 1;
  while (taken.has(prefix + n)) n++;
  return prefix + n;
}

/* podman and skopeo refuse plain HTTP unless told; docker needs the daemon's insecure-registries
 * (it allows 127.0.0.0/8 and localhost by itself). */
function plainHttpNote(commands) {
  if (!PLAIN_HTTP) return null;
  return h("details", {class: "plain-http"},
    h("summary", {}, "This registry is served over plain HTTP"),
    h("p", {}, "podman and skopeo need ", h("code", {}, "--tls-verify=false"), ":"),
    commands.map(command),
    h("p", {}, "docker: add ", h("code", {}, `"insecure-registries": ["${HOST}"]`), " to ",
      h("code", {}, "/etc/docker/daemon.json"), " and restart dockerd (not needed for localhost and 127.0.0.1)."));
}

function pushCommands(ref, tag) {
  return [
    h("div", {class: "cmd-label"}, "Log in with your user name and password (or an access token)"),
    command(loginCommand()),
    h("div", {class: "cmd-label"}, "Tag a local image (replace my-image:latest with yours; a new tag, so nothing is replaced)"),
    command(`docker tag my-image:latest ${ref}:${tag}`),
    h("div", {class: "cmd-label"}, "Push it"),
    command(`docker push ${ref}:${tag}`),
  ];
}

function plainPushCommands(ref, tag) {
  return [`podman login --tls-verify=false --username=${me.username} ${HOST}`,
          `podman push --tls-verify=false my-image:latest ${ref}:${tag}`];
}

function pullCommands(ref, tag, needsLogin) {
  return [
    needsLogin ? [h("div", {class: "cmd-label"}, "Log in"), command(loginCommand())] : null,
    h("div", {class: "cmd-label"}, "Pull"),
    command(`docker pull ${ref}:${tag}`),
  ];
}

function plainPullCommands(ref, tag) {
  return [`podman pull --tls-verify=false ${ref}:${tag}`,
          `skopeo inspect --tls-verify=false docker://${ref}:${tag}`];
}

function pushHowTo(namespace) {
  const ref = `${HOST}/${namespace}/my-image`;
  return h("div", {class: "cmds"}, pushCommands(ref, "latest"), plainHttpNote(plainPushCommands(ref, "latest")));
}

/* Cells of a table that turns into cards on a narrow screen: each cell carries its label. */
function cell(label, attrs, ...children) {
  return h("td", {...(attrs || {}), "data-label": label}, ...children);
}

function visibilityBadge(repo) {
  const open = repo.visibility === "public" || repo.namespace_public;
  return h("span", {class: `badge badge-${open ? "public" : "private"}`,
                    title: open ? (repo.visibility === "public" ? "Anyone may pull this repository" : `Anyone may pull: namespace ${repo.namespace} is public`) : "Only members of the namespace may pull"},
    open ? "public" : "private");
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

/* A list's "Load more" (or nothing when the list is complete); load(cursor, append). */
function moreButton(results, cursor, load, label = "Load more") {
  const old = results.querySelector(".more");
  if (old) old.remove();
  if (cursor) {
    results.append(h("div", {class: "more"}, h("button", {type: "button", class: "btn", onclick: (e) => { e.target.disabled = true; load(cursor, true); }}, label)));
  }
}

/* A page of a searched list: the server reads a bounded number of repositories per request
   (chalicelib/api/manage/repos.py, explore.py), so a page may come back empty with a cursor when
   no name among those read matched. Read on, up to SEARCH_PAGES requests, so that "nothing
   matches" means nothing matched; past that, the list offers to keep searching. */
const SEARCH_PAGES = 10;
async function pageWithRows(path, params, cursor) {
  let page;
  for (let i = 0; i < SEARCH_PAGES; i++) {
    if (cursor) params.set("cursor", cursor);
    page = await api("GET", path + "?" + params);
    if (page.repositories.length || !page.next_cursor) return page;
    cursor = page.next_cursor;
  }
  return page;
}

/* The empty state of a searched list that has not been read to its end yet. */
function notFoundYet(results, cursor, load) {
  results.replaceChildren(h("div", {class: "empty"}, h("h3", {}, "No match so far"),
    h("p", {}, "Only part of the list was searched.")));
  moreButton(results, cursor, load, "Keep searching");
}

function searchAsYouType(search, load) {
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => load(null, false), 250); });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { clearTimeout(timer); load(null, false); } });
}

/* Every tag of a repository (all pages), for a confirmation that names what goes. */
async function allTags(name) {
  const names = [];
  let cursor = null;
  do {
    const page = await api("GET", `/repositories/${name}/_tags?limit=100` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
    names.push(...page.tags.map(t => t.name));
    cursor = page.next_cursor;
  } while (cursor);
  return names;
}

async function deleteRepository(name) {
  let answer;
  do { answer = await api("DELETE", `/repositories/${name}`); } while (answer && answer.complete === false);
}

/* Delete images: the confirmation lists every tag of every one of them. */
async function deleteImagesDialog(names) {
  let tags;
  try {
    tags = await Promise.all(names.map(allTags));
  } catch (error) {
    if (!error.handled) toast(error.message);
    return false;
  }
  const count = names.length === 1 ? "1 image" : `${names.length} images`;
  return confirmDialog({
    title: names.length === 1 ? `Delete ${names[0]}?` : `Delete ${count}?`, danger: true,
    confirmLabel: names.length === 1 ? "Delete image" : `Delete ${count}`,
    body: [h("p", {}, `This permanently deletes ${count} with every tag and manifest:`),
           h("ul", {class: "goes"}, names.map((name, i) => h("li", {"data-goes": name},
             h("strong", {class: "mono"}, name),
             tags[i].length ? h("ul", {}, tags[i].map(t => h("li", {class: "mono"}, `${name}:${t}`))) : h("span", {class: "muted"}, " (no tags)")))),
           h("p", {class: "muted"}, "Pulls of these tags will fail. This cannot be undone.")],
    action: async () => { for (const name of names) await deleteRepository(name); },
  });
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
  const selected = new Set();
  const deleteButton = h("button", {type: "button", class: "btn btn-danger-quiet", disabled: true, "data-action": "delete-selected"}, "Delete");
  const results = h("div", {class: "table-box", "aria-live": "polite"}, h("div", {class: "loading"}, "Loading images…"));
  const panel = h("div", {class: "panel"},
    h("div", {class: "toolbar"}, nsSelect, search, deleteButton),
    results);
  render(pageHead("Images", h("span", {}, "Repositories in ", h("span", {class: "nowrap"}, `${HOST}/${currentNamespace}`)), newButton), panel);
  const head = main.querySelector(".page-head .sub");

  function selectionChanged() {
    deleteButton.disabled = !selected.size;
    deleteButton.textContent = selected.size ? `Delete (${selected.size})` : "Delete";
    const all = results.querySelector("input[data-select-all]");
    const boxes = [...results.querySelectorAll("input[data-select]")];
    if (all) {
      all.checked = boxes.length > 0 && boxes.every(b => b.checked);
      all.indeterminate = !all.checked && boxes.some(b => b.checked);
    }
  }
  deleteButton.addEventListener("click", async () => {
    const names = [...selected].sort();
    if (await deleteImagesDialog(names)) {
      toast(names.length === 1 ? `Deleted ${names[0]}` : `Deleted ${names.length} images`);
      selected.clear();
      selectionChanged();
      load(null, false);
    }
  });

  function row(repo) {
    const box = repo.can_delete ? h("input", {type: "checkbox", "data-select": repo.name, "aria-label": `Select ${repo.name}`,
      checked: selected.has(repo.name), onchange: (e) => { if (e.target.checked) selected.add(repo.name); else selected.delete(repo.name); selectionChanged(); }}) : null;
    return h("tr", {"data-repo": repo.name},
      h("td", {class: "select"}, box),
      h("td", {class: "cell-main"},
        h("a", {class: "repo-name", href: `#/repo/${repo.name}`}, repo.name), " ", visibilityBadge(repo),
        h("div", {class: repo.description ? "repo-desc" : "repo-desc none", title: repo.description || null},
          repo.description || "No description")),
      cell("Tags", {class: "num", "data-col": "tags"}, String(repo.tag_count)),
      cell("Size", {class: "num", "data-col": "size"}, formatSize(repo.size)),
      cell("Last push", {}, timeEl(repo.last_push)),
      h("td", {class: "num cell-actions"}, repo.tag_count ? copyButton(repo.pull_command, "copy-inline", "Copy pull") : null));
  }

  let generation = 0;
  async function load(cursor, append) {
    const mine = ++generation;
    const params = new URLSearchParams({namespace: currentNamespace, limit: "20"});
    if (search.value.trim()) params.set("q", search.value.trim());
    let page;
    try {
      page = await pageWithRows("/repositories", params, cursor);
    } catch (error) {
      if (!error.handled) results.replaceChildren(failure(error, () => load(cursor, append)));
      return;
    }
    if (mine !== generation) return;
    if (!append) { selected.clear(); selectionChanged(); }
    const rows = page.repositories.map(row);
    let table = append ? results.querySelector("tbody") : null;
    if (!table) {
      if (!rows.length && page.next_cursor) return notFoundYet(results, page.next_cursor, load);
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
      const selectAll = h("input", {type: "checkbox", "data-select-all": true, "aria-label": "Select every image on the page",
        onchange: (e) => {
          results.querySelectorAll("input[data-select]").forEach(b => { b.checked = e.target.checked; if (b.checked) selected.add(b.dataset.select); else selected.delete(b.dataset.select); });
          selectionChanged();
        }});
      results.replaceChildren(h("table", {class: "reflow"},
        h("thead", {}, h("tr", {},
          h("th", {scope: "col", class: "select"}, selectAll),
          h("th", {scope: "col"}, "Repository"), h("th", {scope: "col", class: "num"}, "Tags"),
          h("th", {scope: "col", class: "num"}, "Size"), h("th", {scope: "col"}, "Last push"),
          h("th", {scope: "col"}, h("span", {class: "visually-hidden"}, "Pull")))),
        table));
    }
    table.append(...rows);
    selectionChanged();
    moreButton(results, page.next_cursor, load);
  }

  searchAsYouType(search, load);
  if (nsSelect) nsSelect.addEventListener("change", () => {
    currentNamespace = nsSelect.value;
    head.replaceChildren("Repositories in ", h("span", {class: "nowrap"}, `${HOST}/${currentNamespace}`));
    load(null, false);
  });
  await load(null, false);
}

/* ---------------------------------------------------------------- explore */

async function explorePage() {
  setChrome("explore");
  const search = h("input", {type: "search", name: "q", placeholder: "Search public images", "aria-label": "Search public images"});
  const results = h("div", {class: "table-box", "aria-live": "polite"}, h("div", {class: "loading"}, "Loading…"));
  // Official images: GET /explore answers the mirror rules the caller may pull from in
  // `official`; what each cached is on the Official images page (#/official).
  const official = h("div", {});
  render(pageHead("Explore", "Public images of every namespace: anyone may pull them"),
    official,
    h("section", {class: "panel", "aria-labelledby": "public-h"},
      h("div", {class: "panel-head"}, h("h2", {id: "public-h"}, "Public repositories")),
      h("div", {class: "toolbar"}, search), results));
  let generation = 0;
  async function load(cursor, append) {
    const mine = ++generation;
    const params = new URLSearchParams({limit: "20"});
    if (search.value.trim()) params.set("q", search.value.trim());
    let page;
    try { page = await pageWithRows("/explore", params, cursor); } catch (error) {
      if (!error.handled) results.replaceChildren(failure(error, () => load(cursor, append)));
      return;
    }
    if (mine !== generation) return;
    if (!append) {
      official.replaceChildren(...(page.official && page.official.length ? [h("section", {class: "panel", "aria-labelledby": "official-h"},
        h("div", {class: "panel-head"}, h("h2", {id: "official-h"}, "Official images"), " ",
          h("a", {href: "#/official", "data-official-link": ""}, "Browse the cached official images")),
        h("ul", {class: "plain-list"}, page.official.map(o => h("li", {"data-mirror": o.namespace},
          h("a", {href: "#/official"}, `${o.namespace}/ (pulled through from ${o.upstream}/${o.prefix})`)))))] : []));
    }
    const rows = page.repositories.map(repo => h("tr", {"data-repo": repo.name},
      h("td", {class: "cell-main"},
        h("a", {class: "repo-name", href: `#/repo/${repo.name}`}, repo.name), " ", visibilityBadge(repo),
        h("div", {class: repo.description ? "repo-desc" : "repo-desc none"}, repo.description || "No description")),
      cell("Tags", {class: "num"}, String(repo.tag_count)),
      cell("Last push", {}, timeEl(repo.last_push)),
      h("td", {class: "num cell-actions"}, repo.tag_count ? copyButton(repo.pull_command, "copy-inline", "Copy pull") : null)));
    let body = append ? results.querySelector("tbody") : null;
    if (!body) {
      if (!rows.length && page.next_cursor) return notFoundYet(results, page.next_cursor, load);
      if (!rows.length) {
        results.replaceChildren(h("div", {class: "empty"}, h("h3", {}, search.value.trim() ? "No public images match" : "No public images yet"),
          h("p", {}, "Owners make a repository or a whole namespace public; it then appears here.")));
        return;
      }
      body = h("tbody");
      results.replaceChildren(h("table", {class: "reflow"},
        h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Repository"), h("th", {scope: "col", class: "num"}, "Tags"),
          h("th", {scope: "col"}, "Last push"), h("th", {scope: "col"}, h("span", {class: "visually-hidden"}, "Pull")))),
        body));
    }
    body.append(...rows);
    moreButton(results, page.next_cursor, load);
  }
  searchAsYouType(search, load);
  await load(null, false);
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
    if (error.status === 404) {
      render(pageHead(name, null, null, h("a", {href: "#/"}, "← Images")),
        h("div", {class: "panel"}, h("div", {class: "empty", "data-state": "not-found"},
          h("div", {class: "icon", "aria-hidden": "true"}, "?"),
          h("h2", {}, "Repository not found"),
          h("p", {}, `There is no repository ${name}: it was deleted or never created, or you may not see it.`),
          h("a", {class: "btn", href: "#/"}, "Back to your images"))));
      return;
    }
    render(pageHead(name, null, null, h("a", {href: "#/"}, "← Images")), failure(error, () => repositoryPage(name)));
    return;
  }
  const ref = `${HOST}/${repo.name}`;
  const tag = repo.latest_tag || "latest";
  const canPush = repo.permissions.includes("push");
  const newTag = proposeTag(repo.latest_tag, tags.tags.map(t => t.name));

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
  const tagPanelBody = h("div", {class: "table-box"});
  function fillTags() {
    tagBody.replaceChildren(...tags.tags.map(tagRow));
    if (!tags.tags.length) {
      tagPanelBody.replaceChildren(h("div", {class: "empty"},
        h("h3", {}, "No tags"),
        h("p", {}, canPush ? "Push an image to this repository (the commands are beside this) and its tags appear here."
                           : "Nothing has been pushed to this repository yet.")));
    } else {
      tagPanelBody.replaceChildren(h("table", {class: "reflow"},
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
      h("td", {class: "cell-main"},
        h("span", {class: "mono repo-name"}, t.name), " ",
        t.kind !== "image" ? h("span", {class: "badge badge-kind"}, t.kind === "index" ? "multi-arch" : t.kind) : null,
        h("div", {class: "platforms", "data-platforms": t.platforms.join(" ")},
          t.platforms.length ? t.platforms.map(p => h("span", {class: "platform", title: "OS/architecture"}, p)) : h("span", {class: "faint"}, "no platform"))),
      cell("Digest", {class: "digest"}, copyButton(t.digest, "copy-inline mono", shortDigest(t.digest))),
      cell("Size", {class: "num", "data-col": "size"}, formatSize(t.size)),
      cell("Pushed", {}, timeEl(t.pushed)),
      h("td", {class: "num cell-actions"}, h("span", {class: "row-actions"}, copyButton(t.pull_command, "copy-inline", "Copy pull"), del)));
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
    const names = await allTags(repo.name);
    const ok = await confirmDialog({
      title: `Delete ${repo.name}?`, danger: true, confirmLabel: "Delete image",
      body: [h("p", {}, "This permanently deletes the repository ", h("strong", {class: "mono"}, repo.name), " and everything in it:"),
             h("ul", {class: "goes"},
               names.length ? names.map(n => h("li", {class: "mono"}, `${repo.name}:${n}`)) : h("li", {}, "no tags"),
               h("li", {}, `${repo.manifest_count} manifest${repo.manifest_count === 1 ? "" : "s"} (${formatSize(repo.size)})`),
               repo.description ? h("li", {}, "its description") : null),
             h("p", {class: "muted"}, "Pulls of these tags will fail. This cannot be undone.")],
      action: () => deleteRepository(repo.name),
    });
    if (ok) {
      toast(`Deleted ${repo.name}`);
      go("#/");
    }
  }

  const title = h("span", {class: "repo-title"},
    h("span", {class: "ns"}, repo.namespace + "/"), repo.name.slice(repo.namespace.length + 1), " ",
    visibilityBadge(repo));
  render(
    pageHead(title, null, null, h("a", {href: "#/"}, "← Images")),
    h("div", {class: "facts"},
      h("div", {class: "fact"}, h("div", {class: "k"}, "Tags"), h("div", {class: "v", "data-fact": "tags"}, String(repo.tag_count))),
      h("div", {class: "fact"}, h("div", {class: "k"}, "Size"), h("div", {class: "v", "data-fact": "size"}, formatSize(repo.size))),
      h("div", {class: "fact"}, h("div", {class: "k"}, "Last push"), h("div", {class: "v"}, timeEl(repo.last_push))),
      h("div", {class: "fact"}, h("div", {class: "k"}, "Your access"), h("div", {class: "v"}, repo.role || "pull"))),
    h("div", {class: "stack"},
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
            tags.tags.length ? pullCommands(ref, tag, !canPush && !(repo.visibility === "public" || repo.namespace_public)) : null,
            canPush ? pushCommands(ref, newTag) : null,
            plainHttpNote([...(tags.tags.length ? plainPullCommands(ref, tag) : []), ...(canPush ? plainPushCommands(ref, newTag) : [])]),
            !canPush && !tags.tags.length ? h("p", {class: "muted"}, "No image to pull yet.") : null)),
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
    // the change ends every session, this one too
    me = null;
    flash = "Password changed: every session has ended. Sign in with the new password.";
    signInPage();
  });

  const tokenList = h("div", {}, h("div", {class: "loading"}, "Loading tokens…"));
  const tokenName = h("input", {type: "text", name: "name", placeholder: "e.g. ci-deploy"});
  const tokenScope = h("select", {name: "scope"}, h("option", {value: "pull"}, "pull"), h("option", {value: "push"}, "push (and pull)"));
  const tokenPassword = h("input", {type: "password", name: "password", autocomplete: "current-password"});
  const secretBox = h("div", {});
  const tokenForm = h("form", {class: "panel-body", novalidate: true},
    h("div", {class: "inline-form"}, field("Token name", tokenName), field("Scope", tokenScope),
      field("Your password", tokenPassword),
      h("button", {type: "submit", class: "btn btn-primary"}, "Create token")),
    secretBox);
  onSubmit(tokenForm, async (data) => {
    const name = String(data.get("name")).trim();
    if (!name) throw new ApiError(400, {message: "Name the token after where it is used.", field: "name"});
    if (!data.get("password")) throw new ApiError(400, {message: "Enter your password: a token lasts until it is revoked.", field: "password"});
    const created = await api("POST", "/me/tokens", {name, scope: data.get("scope"), password: data.get("password")});
    tokenForm.reset();
    secretBox.replaceChildren(h("div", {class: "secret"},
      h("div", {class: "notice"}, `Copy the token “${created.name}” now: it is not shown again. Use it as the password of docker login --username=${me.username} ${HOST}.`),
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
    tokenList.replaceChildren(h("table", {class: "reflow"},
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Name"), h("th", {scope: "col"}, "Scope"),
        h("th", {scope: "col"}, "Created"), h("th", {scope: "col"}, "Last used"), h("th", {scope: "col", class: "num"}, "Actions"))),
      h("tbody", {}, live.map(t => h("tr", {"data-token": t.name},
        h("td", {class: "repo-name cell-main"}, t.name), cell("Scope", {}, h("span", {class: "badge"}, t.scope)),
        cell("Created", {}, timeEl(t.created)), cell("Last used", {}, timeEl(t.last_used)),
        h("td", {class: "num cell-actions"}, h("button", {type: "button", class: "btn btn-small btn-danger-quiet", "aria-label": `Revoke token ${t.name}`,
          onclick: async () => {
            const ok = await confirmDialog({title: `Revoke ${t.name}?`, danger: true, confirmLabel: "Revoke",
              body: h("p", {}, "Logins with this token stop working at once."),
              action: () => api("DELETE", `/me/tokens/${t.id}`)});
            if (ok) { toast(`Revoked ${t.name}`); loadTokens(); }
          }}, "Revoke")))))));
  }

  const nsName = h("input", {type: "text", name: "name", autocapitalize: "off", spellcheck: "false"});
  const nsForm = h("form", {class: "panel-body", novalidate: true},
    h("div", {class: "inline-form"}, field("Add a namespace", nsName, `— ${NAMESPACE_HINT}`),
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
    list.replaceChildren(h("table", {class: "reflow"},
      h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "User"), h("th", {scope: "col"}, "Role"),
        h("th", {scope: "col"}, "Created"), h("th", {scope: "col", class: "num"}, "Actions"))),
      h("tbody", {}, answer.users.map(u => h("tr", {"data-user": u.username},
        h("td", {class: "repo-name cell-main"}, u.username, u.disabled ? [" ", h("span", {class: "badge"}, "disabled")] : null),
        cell("Role", {}, u.admin ? h("span", {class: "badge badge-kind"}, "admin") : "user"),
        cell("Created", {}, timeEl(u.created)),
        h("td", {class: "num cell-actions"}, u.username === me.username ? h("span", {class: "faint"}, "you") :
          h("button", {type: "button", class: u.disabled ? "btn btn-small" : "btn btn-small btn-danger-quiet",
            onclick: async () => {
              try {
                await api("PATCH", `/users/${encodeURIComponent(u.username)}`, {disabled: !u.disabled});
                toast(`${u.disabled ? "Enabled" : "Disabled"} ${u.username}`);
                load();
              } catch (error) { if (!error.handled) toast(error.message); }
            }}, u.disabled ? "Enable" : "Disable")))))));
  }
  const inviteBox = h("div", {});
  const inviteButton = h("button", {type: "button", class: "btn", onclick: async () => {
    try {
      const invite = await api("POST", "/invites");
      inviteBox.replaceChildren(h("div", {class: "secret"},
        h("div", {class: "notice"}, `A single-use invitation, valid until ${new Date(invite.expires * 1000).toLocaleDateString()}: send it to the newcomer (it is not shown again).`,
          invite.signup !== "invite" ? ` Sign-up is ${invite.signup} on this registry (BERTH_SIGNUP): invitations are asked for only when it is "invite".` : ""),
        command(invite.code)));
    } catch (error) { if (!error.handled) toast(error.message); }
  }}, "Create an invitation");
  render(pageHead("Users", "Everyone who may log in to this registry"),
    h("section", {class: "panel"}, h("div", {class: "panel-head"}, h("h2", {}, "New user")), form),
    h("section", {class: "panel"}, h("div", {class: "panel-head"}, h("h2", {}, "Invitations"), h("div", {class: "actions"}, inviteButton)),
      h("div", {class: "panel-body"}, h("p", {class: "muted"}, "With BERTH_SIGNUP=invite, newcomers sign up themselves with a code made here."), inviteBox)),
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
  if (hash === "#/signup" && !me) return signUpPage();
  if (!me) {
    try { me = await request("GET", "/me"); } catch (error) {
      if (error.status === 401) { signInPage(); return; }
      render(failure(error, route));
      return;
    }
  }
  if (hash === "#/signin" || hash === "#/signup") { go("#/"); return; }
  if (!me.namespaces.length && !["#/account", "#/users", "#/explore", "#/official"].includes(hash) && !hash.startsWith("#/repo/")) { activatePage(); return; }
  if (hash === "#/activate") { activatePage(); return; }
  main.focus({preventScroll: true});
  if (hash.startsWith("#/repo/")) return repositoryPage(decodeURIComponent(hash.slice(7)));
  if (hash === "#/account") return accountPage();
  if (hash === "#/users") return usersPage();
  if (hash === "#/explore") return explorePage();
  if (hash === "#/official") return officialPage();
  return imagesPage();
}

document.getElementById("signout").addEventListener("click", async () => {
  try { await request("DELETE", "/session"); } catch (error) { /* already ended: signed out all the same */ }
  me = null;
  go("#/", "You are signed out.");
});
window.addEventListener("hashchange", route);
route();
