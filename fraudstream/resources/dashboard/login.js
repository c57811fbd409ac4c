// The login page: the name and password go to the service as JSON; it answers with a
// session cookie, and the page goes where the user was headed (a path of this site only).
"use strict";

const $ = (id) => document.getElementById(id);

function next() {
  const wanted = new URLSearchParams(location.search).get("next") || "/";
  return wanted.startsWith("/") && !wanted.startsWith("//") ? wanted : "/";
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-status").textContent = "logging in…";
  try {
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    location.href = next();
  } catch (error) {
    $("login-status").textContent = error.message;
    $("password").value = "";
  }
});
