// The rules page: the rules topic's rules with their hits today, each enabled or disabled
// by publishing its next version. Data is only put into the page as text.
"use strict";

// Hits move as alerts arrive: the table is read again this often.
const REFRESH_MS = 5000;

const $ = (id) => document.getElementById(id);
const tbody = document.querySelector("#rules tbody");
let busy = false; // a change is being sent: no refresh redraws the button meanwhile

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function ruleRow(r) {
  const tr = el("tr");
  tr.dataset.ruleId = r.rule_id;
  tr.dataset.enabled = String(r.enabled);
  const name = el("td", r.rule_id, "rule");
  if (r.description) name.append(el("div", r.description, "muted"));
  tr.append(name, el("td", "v" + r.version, "num version"), el("td", r.condition, "condition"),
    el("td", r.action, "action action-" + r.action),
    el("td", r.enabled ? "enabled" : "disabled", "state"),
    el("td", r.action === "allow" ? "–" : r.hits_today.toLocaleString("en"), "num hits"));
  const author = el("td", r.author);
  author.append(el("div", r.published_time.replace("T", " ").slice(0, 16) + " UTC", "muted"));
  const button = el("button", r.enabled ? "Disable" : "Enable",
    (r.enabled ? "disable" : "enable") + " needs-admin");
  button.type = "button";
  button.addEventListener("click", () => setEnabled(r.rule_id, !r.enabled, button));
  const cell = el("td");
  cell.append(button);
  tr.append(author, cell);
  return tr;
}

async function load() {
  if (busy) return;
  try {
    const response = await fetch("/api/rules");
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    if (busy) return;
    $("topic").textContent = body.topic;
    $("today").textContent = body.today;
    tbody.replaceChildren(...body.rules.map(ruleRow));
    $("empty").hidden = body.rules.length > 0;
    if (body.set_aside) {
      $("rules-status").textContent = body.set_aside + " record(s) of the topic are not valid " +
        "rules and were set aside (fraudstream rules list shows why).";
    }
  } catch (error) {
    $("rules-status").textContent = "Rules not read: " + error.message;
  }
}

async function setEnabled(ruleId, enabled, button) {
  busy = true;
  button.disabled = true;
  $("rules-status").textContent = (enabled ? "enabling " : "disabling ") + ruleId + "…";
  try {
    const body = await send("/api/rules/" + encodeURIComponent(ruleId) + "/enabled", { enabled });
    $("rules-status").textContent = (body.changed ? "Published " : "Already so: ") +
      body.rule_id + " v" + body.version + ", " + (body.enabled ? "enabled" : "disabled") + ".";
  } catch (error) {
    $("rules-status").textContent = "Not changed: " + error.message;
  } finally {
    busy = false;
    button.disabled = false;
  }
  await load();
}

load();
setInterval(load, REFRESH_MS);
