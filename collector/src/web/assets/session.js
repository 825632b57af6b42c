"use strict";
// Who is signed in (GET /api/v1/me): name, role and a sign-out button in the bar; the role on
// <body data-role>, so that app.css hides the controls the role cannot use (the server refuses
// them anyway); and the "Users" view: every signed-in user's own API tokens, and for admins the
// users, their roles, disabling and new users. Loaded after app.js; uses its globals (t, esc,
// api, adminRequest, fmtTime, registerView, addStrings).

addStrings({
  en: {
    "nav.users": "Users", "role.viewer": "viewer", "role.operator": "operator", "role.admin": "admin",
    "session.sign_out": "Sign out", "users.title": "Users and API tokens", "users.mine": "My API tokens",
    "users.all": "Users", "users.add": "Add a user", "users.name": "Name", "users.role": "Role",
    "users.password": "Password (at least 10 characters)", "users.state": "State", "users.disabled": "disabled",
    "users.enabled": "enabled", "users.disable": "Disable", "users.enable": "Enable", "users.created": "Created",
    "users.tokens": "API tokens", "users.token.label": "Label", "users.token.new": "Make a token",
    "users.token.once": "Copy this token now: it is shown only once.", "users.token.revoke": "Revoke",
    "users.token.none": "No API token.", "users.done": "Saved.", "users.failed": "Refused: {error}",
  },
  "zh-CN": {
    "nav.users": "用户", "role.viewer": "查看者", "role.operator": "操作员", "role.admin": "管理员",
    "session.sign_out": "退出登录", "users.title": "用户与 API 令牌", "users.mine": "我的 API 令牌",
    "users.all": "用户", "users.add": "添加用户", "users.name": "用户名", "users.role": "角色",
    "users.password": "密码（至少 10 个字符）", "users.state": "状态", "users.disabled": "已停用",
    "users.enabled": "启用中", "users.disable": "停用", "users.enable": "启用", "users.created": "创建时间",
    "users.tokens": "API 令牌", "users.token.label": "标签", "users.token.new": "生成令牌",
    "users.token.once": "请立即复制此令牌：它只显示这一次。", "users.token.revoke": "吊销",
    "users.token.none": "没有 API 令牌。", "users.done": "已保存。", "users.failed": "被拒绝：{error}",
  },
});

window.posmonSession = null;

function roleOptions(selected) {
  return ["viewer", "operator", "admin"].map(role => `<option value="${role}" ${role === selected ? "selected" : ""}>${esc(t("role." + role))}</option>`).join("");
}

// The answer's error message, for the line under a form.
async function refusal(response) {
  if (!response) return "";
  try {
    const body = await response.json();
    return body?.error?.message || `${response.status}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

let usersMessage = null;
let issuedToken = null;

async function viewUsers(main, _route, fresh) {
  if (!fresh) return; // Forms are not redrawn under the user's fingers; actions redraw.
  const me = window.posmonSession;
  if (!me?.signed_in) {
    main.innerHTML = `<h1>${esc(t("users.title"))}</h1><p class="notice">${esc(t("users.token.none"))}</p>`;
    return;
  }
  const mine = await api("/api/v1/me/tokens");
  const tokenRows = tokens => tokens.map(token => `<tr data-token="${token.id}"><td>${esc(token.label)}</td><td>${esc(t("role." + token.role))}</td><td>${esc(fmtTime(token.created_at))}</td>
    <td><button type="button" class="token-revoke" data-user="${esc(token.user)}" data-id="${token.id}">${esc(t("users.token.revoke"))}</button></td></tr>`).join("");
  let html = `<h1>${esc(t("users.title"))}</h1>
    ${usersMessage ? `<p id="users-message" class="${usersMessage.error ? "error" : "muted"}">${esc(usersMessage.text)}</p>` : ""}
    ${issuedToken ? `<p class="notice" id="token-issued">${esc(t("users.token.once"))}<br><code class="token-secret" id="token-secret">${esc(issuedToken)}</code></p>` : ""}
    <section class="panel"><h2>${esc(t("users.mine"))}</h2>
      ${mine.tokens.length ? `<table id="my-tokens"><thead><tr><th>${esc(t("users.token.label"))}</th><th>${esc(t("users.role"))}</th><th>${esc(t("users.created"))}</th><th></th></tr></thead><tbody>${tokenRows(mine.tokens)}</tbody></table>` : `<p class="muted">${esc(t("users.token.none"))}</p>`}
      <form id="token-form" class="filters"><label>${esc(t("users.token.label"))} <input id="token-label" maxlength="100" size="20"></label>
      <label>${esc(t("users.role"))} <select id="token-role">${roleOptions(me.role)}</select></label>
      <button type="submit" id="token-new">${esc(t("users.token.new"))}</button></form>
    </section>`;
  if (me.role === "admin") {
    const data = await api("/api/v1/users");
    const rows = data.users.map(user => `<tr data-user="${esc(user.name)}"><td><strong>${esc(user.name)}</strong></td>
      <td><select class="user-role" data-user="${esc(user.name)}">${roleOptions(user.role)}</select></td>
      <td>${user.disabled ? badge("critical", t("users.disabled")) : badge("ok", t("users.enabled"))}</td>
      <td>${esc(fmtTime(user.created_at))}</td>
      <td>${esc(String(data.tokens.filter(token => token.user === user.name).length))}</td>
      <td><button type="button" class="user-toggle" data-user="${esc(user.name)}" data-disabled="${user.disabled}">${esc(t(user.disabled ? "users.enable" : "users.disable"))}</button></td></tr>`).join("");
    html += `<section class="panel mt" data-needs-role="admin"><h2>${esc(t("users.all"))}</h2>
      <table id="users"><thead><tr><th>${esc(t("users.name"))}</th><th>${esc(t("users.role"))}</th><th>${esc(t("users.state"))}</th><th>${esc(t("users.created"))}</th><th>${esc(t("users.tokens"))}</th><th></th></tr></thead><tbody>${rows}</tbody></table>
      ${data.tokens.length ? `<h2>${esc(t("users.tokens"))}</h2><table id="all-tokens"><tbody>${data.tokens.map(token => `<tr><td>${esc(token.user)}</td>${tokenRows([token]).replace(/^<tr[^>]*>|<\/tr>$/g, "")}</tr>`).join("")}</tbody></table>` : ""}
      <h2>${esc(t("users.add"))}</h2>
      <form id="user-form" class="filters"><label>${esc(t("users.name"))} <input id="user-name" maxlength="64" size="14" autocomplete="off"></label>
      <label>${esc(t("users.role"))} <select id="user-role">${roleOptions("viewer")}</select></label>
      <label>${esc(t("users.password"))} <input id="user-password" type="password" maxlength="1024" size="16" autocomplete="new-password"></label>
      <button type="submit" id="user-add">${esc(t("users.add"))}</button></form>
    </section>`;
  }
  main.innerHTML = html;
  issuedToken = null;
  const redraw = async (response, ok) => {
    usersMessage = response?.ok ? (ok ? { text: t("users.done") } : null) : { error: true, text: t("users.failed", { error: await refusal(response) }) };
    await viewUsers(main, _route, true);
  };
  main.querySelector("#token-form").addEventListener("submit", async event => {
    event.preventDefault();
    const response = await adminRequest("POST", "/api/v1/me/tokens", { label: main.querySelector("#token-label").value, role: main.querySelector("#token-role").value });
    if (response?.ok) issuedToken = (await response.json()).token;
    await redraw(response, false);
  });
  main.querySelectorAll(".token-revoke").forEach(button => button.addEventListener("click", async () => {
    const own = button.dataset.user === me.name && !main.querySelector("#users")?.contains(button);
    const path = own ? `/api/v1/me/tokens/${button.dataset.id}` : `/api/v1/users/${encodeURIComponent(button.dataset.user)}/tokens/${button.dataset.id}`;
    await redraw(await adminRequest("DELETE", path), true);
  }));
  main.querySelector("#user-form")?.addEventListener("submit", async event => {
    event.preventDefault();
    const response = await adminRequest("POST", "/api/v1/users", {
      name: main.querySelector("#user-name").value, role: main.querySelector("#user-role").value, password: main.querySelector("#user-password").value,
    });
    await redraw(response, true);
  });
  main.querySelectorAll(".user-role").forEach(select => select.addEventListener("change", async () => {
    await redraw(await adminRequest("PATCH", `/api/v1/users/${encodeURIComponent(select.dataset.user)}`, { role: select.value }), true);
  }));
  main.querySelectorAll(".user-toggle").forEach(button => button.addEventListener("click", async () => {
    const disabled = button.dataset.disabled !== "true";
    await redraw(await adminRequest("PATCH", `/api/v1/users/${encodeURIComponent(button.dataset.user)}`, { disabled }), true);
  }));
}

async function signOut() {
  await adminRequest("POST", "/api/v1/logout");
  window.posmonSession = null;
  location.assign(`/login?lang=${encodeURIComponent(lang)}`);
}

async function loadSession() {
  let me;
  try {
    me = await api("/api/v1/me");
  } catch {
    return;
  }
  window.posmonSession = me;
  if (!me.signed_in) return;
  document.body.dataset.role = me.role;
  const who = document.createElement("span");
  who.className = "who";
  who.id = "who";
  who.dataset.role = me.role;
  who.innerHTML = `<span id="who-name">${esc(me.name)}</span> <span class="badge" id="who-role" data-i18n="role.${esc(me.role)}">${esc(t("role." + me.role))}</span>
    <button type="button" id="sign-out" data-i18n="session.sign_out">${esc(t("session.sign_out"))}</button>`;
  document.getElementById("lang-toggle").before(who);
  document.getElementById("sign-out").addEventListener("click", signOut);
  const link = document.createElement("a");
  link.href = "#/users";
  link.dataset.view = "users";
  link.dataset.i18n = "nav.users";
  link.id = "nav-users";
  link.textContent = t("nav.users");
  document.getElementById("nav").append(link);
}

registerView("users", viewUsers);
// Before the first render (app.js renders at DOMContentLoaded, after this script has run).
const sessionLoaded = loadSession();
document.addEventListener("DOMContentLoaded", async () => {
  await sessionLoaded;
  if (location.hash.startsWith("#/users")) refresh();
});
