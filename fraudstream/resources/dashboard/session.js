// Who is logged in, and the CSRF token that every change carries. Loaded before each
// page's own script; the service checks every role again, this only tailors the page.
"use strict";

const ROLES = ["viewer", "analyst", "admin"];
const session = { user: null, role: null, csrf: null, auth: null };
const toLogin = () => {
  location.href = "/login?next=" + encodeURIComponent(location.pathname);
};

// Ask the service who this session is; without one, go to the login page.
async function whoAmI() {
  const response = await fetch("/api/me");
  if (response.status === 401) {
    if (session.auth !== "proxy") toLogin();
    throw new Error("not logged in");
  }
  Object.assign(session, await response.json());
  document.body.dataset.role = session.role;
  const who = document.getElementById("who");
  if (who) {
    who.textContent = session.user + " · " + session.role;
    who.hidden = false;
  }
  const out = document.getElementById("logout");
  if (out) out.hidden = session.auth !== "password";
  return session;
}
const ready = whoAmI();

// POST a JSON body with the session's CSRF token. A token the service no longer knows
// (it restarted) is fetched again once; an ended login goes to the login page.
async function send(path, body) {
  await ready.catch(() => {});
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": session.csrf || "" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (response.status === 401 && session.auth === "password") toLogin();
    if (response.status === 403 && answer.reason === "csrf" && attempt === 0) {
      await whoAmI();
      continue;
    }
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  }
}

document.getElementById("logout")?.addEventListener("click", async () => {
  await send("/api/logout", {}).catch(() => {});
  toLogin();
});
