// canary-gateway dashboard: plain JavaScript over the admin API, no dependencies.
// The admin token lives in sessionStorage (this tab only) and is sent only to this origin.
"use strict";

const TOKEN_KEY = "canary-gateway-admin-token";
const REFRESH_MS = 10000;
const state = { selected: null, timer: null };

const $ = (selector) => document.querySelector(selector);
const token = () => sessionStorage.getItem(TOKEN_KEY);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    signOut("The admin token was refused.");
    throw new Error("unauthorized");
  }
  if (!response.ok) throw new Error((data.error && data.error.message) || `HTTP ${response.status}`);
  return data;
}

function showError(message) { $("#error").textContent = message || ""; }

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.timer);
  $("#app").hidden = true;
  $("#session").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
}

async function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api("GET", "/admin/deployments");
  } catch (error) {
    if (error.message !== "unauthorized") $("#sign-in-error").textContent = error.message;
    return;
  }
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#session").hidden = false;
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  try {
    const { deployments } = await api("GET", "/admin/deployments");
    renderDeployments(deployments);
    const chosen = deployments.find((d) => d.name === state.selected) || deployments[0];
    if (chosen) await renderDetail(chosen);
    showError("");
  } catch (error) {
    if (error.message !== "unauthorized") showError(error.message);
  }
}

function renderDeployments(deployments) {
  const nav = $("#deployments");
  nav.replaceChildren(...deployments.map((d) => {
    const button = element("button", { type: "button", "data-deployment": d.name,
      class: d.name === state.selected ? "selected" : "" },
      element("strong", {}, d.name), element("br"),
      `${d.stable}${d.canary ? ` → ${d.canary} at ${d.canary_percent}%` : ""} `,
      element("span", { class: `badge ${d.status}` }, d.status),
      d.mode && d.mode !== "canary" ? element("span", { class: `badge ${d.mode}` }, d.mode) : "",
      d.paused ? element("span", { class: "badge paused" }, "paused") : "");
    button.addEventListener("click", () => { state.selected = d.name; refresh(); });
    return button;
  }));
}

async function renderDetail(deployment) {
  state.selected = deployment.name;
  for (const button of document.querySelectorAll("#deployments button")) {
    button.classList.toggle("selected", button.dataset.deployment === deployment.name);
  }
  $("#detail").hidden = false;
  $("#deployment-name").textContent = deployment.name;
  const fields = [["Stable", deployment.stable], ["Canary", deployment.canary || "–"],
    ["Percent", `${deployment.canary_percent}%`], ["Stage", deployment.stage], ["Status", deployment.status],
    ["Mode", deployment.mode || "–"], ["Paused", deployment.paused ? "yes" : "no"]];
  $("#state").replaceChildren(...fields.flatMap(([label]) => [element("dt", {}, label)]),
    ...fields.map(([, value]) => element("dd", {}, value)));
  const running = deployment.status === "canary";
  const abTest = deployment.mode === "ab_test";
  for (const button of document.querySelectorAll("#actions button")) {
    const action = button.dataset.action;
    button.disabled = !running || (action === "pause" && deployment.paused) ||
      (action === "resume" && !deployment.paused);
    if (action === "conclude") button.hidden = !abTest;
  }
  const hours = Number($("#window").value);
  const step = Math.max(60, Math.ceil((hours * 3600) / 120 / 60) * 60);
  const base = `/admin/deployments/${encodeURIComponent(deployment.name)}`;
  const [series, compare, events, decision] = await Promise.all([
    api("GET", `${base}/timeseries?hours=${hours}&step=${step}`),
    api("GET", `${base}/compare?hours=${hours}`),
    api("GET", `${base}/events?limit=50`),
    api("GET", `${base}/decision`),
  ]);
  renderCharts(series, deployment, hours);
  renderCompare(compare);
  renderShadow(deployment, compare, decision);
  const report = decision.decision === "report" ? decision.report : null;
  $("#stage").hidden = report !== null;
  renderIntervals(decision.decision && !report ? decision : null, deployment.mode);
  renderReport(report);
  renderEvents(events.events);
}

function roleOf(version, deployment) {
  return version === deployment.canary ? "canary" : "stable";
}

function renderCharts(data, deployment, hours) {
  const end = Date.now();
  const start = end - hours * 3600 * 1000;
  for (const figure of document.querySelectorAll(".chart")) {
    const metric = figure.dataset.metric;
    const lines = Object.entries(data.series)
      .filter(([version]) => version === deployment.stable || version === deployment.canary)
      .map(([version, points]) => ({
        version, role: roleOf(version, deployment),
        points: points.filter((p) => p[metric] !== null).map((p) => [Date.parse(p.t), p[metric]]),
      }));
    figure.replaceChildren(element("h3", {}, figure.dataset.title), chart(lines, start, end),
      element("div", { class: "legend" }, ...lines.map((line) =>
        element("span", { class: line.role }, `■ ${line.version} (${line.role})  `))));
  }
}

function chart(lines, start, end) {
  const svgNs = "http://www.w3.org/2000/svg";
  const width = 560, height = 180, left = 44, bottom = 18;
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const values = lines.flatMap((line) => line.points.map(([, y]) => y));
  const top = Math.max(...values, 0) * 1.1 || 1;
  const x = (t) => left + ((t - start) / (end - start)) * (width - left - 4);
  const y = (v) => (height - bottom) - (v / top) * (height - bottom - 8);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(svgNs, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom });
  add("line", { class: "axis", x1: left, y1: 0, x2: left, y2: height - bottom });
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    add("text", { x: 2, y: y(value) + 3 }, value >= 100 ? value.toFixed(0) : value.toPrecision(2));
  }
  add("text", { x: left, y: height - 4 }, new Date(start).toLocaleTimeString());
  add("text", { x: width - 60, y: height - 4 }, new Date(end).toLocaleTimeString());
  for (const line of lines) {
    if (!line.points.length) continue;
    add("polyline", { class: `series-${line.role}`, "data-version": line.version,
      points: line.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") });
  }
  return svg;
}

function format(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function renderCompare(result) {
  const stable = result.stable, canary = result.canary || {};
  const rows = [
    ["requests", stable.requests, canary.requests, null, 0],
    ["avg_quality", stable.avg_quality, canary.avg_quality, result.diff_pct.avg_quality, 3],
    ["p95_latency_ms", stable.p95_latency_ms, canary.p95_latency_ms, result.diff_pct.p95_latency_ms, 1],
    ["avg_cost", stable.avg_cost, canary.avg_cost, result.diff_pct.avg_cost, 6],
    ["error_rate", stable.error_rate, canary.error_rate, result.diff_pct.error_rate, 3],
  ];
  $("#compare").replaceChildren(
    element("tr", {}, element("th", {}, "Metric"), element("th", {}, `Stable (${stable.version})`),
      element("th", {}, `Canary (${canary.version || "none"})`), element("th", {}, "Diff")),
    ...rows.map(([name, a, b, diff, digits]) => element("tr", { "data-metric": name },
      element("td", {}, name), element("td", {}, format(a, digits)), element("td", {}, format(b, digits)),
      element("td", {}, diff === null || diff === undefined ? "–" : `${diff > 0 ? "+" : ""}${diff.toFixed(1)}%`))));
}

function renderShadow(deployment, compare, decision) {
  const shadow = deployment.mode === "shadow";
  $("#shadow").hidden = !shadow;
  if (!shadow) return;
  const evidence = decision.evidence || {};
  const needed = deployment.policy.shadow.min_pairs;
  const winRate = evidence.win_rate === null || evidence.win_rate === undefined ? "–" : format(evidence.win_rate, 3);
  $("#shadow-progress").textContent = `${evidence.pairs || 0} pairs of ${needed} needed before a verdict ` +
    `(${evidence.judged_pairs || 0} judged pairwise, canary win rate ${winRate}); ` +
    `sampling ${deployment.policy.shadow.sample_rate * 100}% of stable's calls. Verdict now: ${decision.summary || "–"}`;
  const copies = compare.shadow || {};
  const rows = [["copies", copies.requests, 0], ["error_rate", copies.error_rate, 3],
    ["p95_latency_ms", copies.p95_latency_ms, 1], ["avg_cost", copies.avg_cost, 6], ["total_cost", copies.total_cost, 6]];
  $("#shadow-sides").replaceChildren(
    element("tr", {}, element("th", {}, "Canary on the shadow copies"), element("th", {}, `${deployment.canary}`)),
    ...rows.map(([name, value, digits]) => element("tr", { "data-metric": name },
      element("td", {}, name), element("td", {}, format(value, digits)))));
}

function renderReport(report) {
  $("#ab").hidden = report === null;
  if (!report) return;
  $("#ab-summary").textContent = `${report.candidate} vs ${report.stable} (stable) at ${report.split}% of users, ` +
    `alpha ${report.alpha}, valid at any look: ${report.summary}`;
  $("#ab-report").replaceChildren(
    element("tr", {}, ...["Metric", report.stable, report.candidate, "Difference", "Interval", "Significant", "Needs"]
      .map((h) => element("th", {}, h))),
    ...report.metrics.map((metric) => element("tr", { "data-metric": metric.metric, title: metric.line },
      element("td", {}, metric.label), element("td", {}, format(metric.stable, 4)),
      element("td", {}, format(metric.candidate, 4)), element("td", {}, format(metric.difference, 5)),
      element("td", {}, metric.lower === null ? "–" : `[${format(metric.lower, 5)}, ${format(metric.upper, 5)}]`),
      element("td", { class: metric.significant ? "verdict-rollback" : "" }, metric.significant ? "yes" : "no"),
      element("td", {}, metric.needs_calls === null ? "–" : `~${metric.needs_calls} more calls`))));
  const srm = report.srm;
  $("#ab-srm").textContent = srm ? `Sample ratio: ${report.candidate} has ${(srm.observed_candidate_share * 100)
    .toFixed(2)}% of users, expected ${(srm.expected_candidate_share * 100).toFixed(2)}% (p = ${srm.p_value
    .toPrecision(3)}): ${srm.mismatch ? "MISMATCH, do not conclude" : "no mismatch"}` : "";
}

function renderIntervals(stage, mode) {
  $("#stage-title").textContent = mode === "shadow"
    ? "Shadow stage: canary vs stable on the same calls, anytime-valid intervals"
    : "This stage: canary / stable, anytime-valid intervals";
  $("#stage-summary").textContent = stage ? `Decision now: ${stage.summary}` : "No canary is running.";
  const rows = stage ? stage.metrics : [];
  $("#intervals").replaceChildren(
    element("tr", {}, ...["Metric", "Role", "Ratio", "Interval", "Threshold", "Verdict"].map((h) => element("th", {}, h))),
    ...rows.map((test) => element("tr", { "data-metric": test.metric, "data-role": test.role, title: test.line },
      element("td", {}, test.metric), element("td", {}, test.role), element("td", {}, format(test.estimate, 3)),
      element("td", {}, test.lower === null ? "–" : `[${format(test.lower, 3)}, ${format(test.upper, 3)}]`),
      element("td", {}, String(test.threshold)), element("td", { class: `verdict-${test.verdict}` }, test.verdict))));
}

function renderEvents(events) {
  $("#events").replaceChildren(...events.map((event) => element("li", {},
    element("span", { class: "when" }, new Date(event.at).toLocaleString()),
    element("strong", {}, event.action), ` by ${event.actor}`,
    event.to ? ` → ${event.to.canary || event.to.stable} at ${event.to.canary_percent}%` : "",
    event.reason ? element("span", { class: "reason" }, event.reason) : "")));
}

async function act(action) {
  const name = state.selected;
  const base = `/admin/deployments/${encodeURIComponent(name)}`;
  try {
    if (action === "conclude") {
      const deployment = (await api("GET", base));
      const winner = prompt(`Winner of the A/B test of ${name} (${deployment.stable} or ${deployment.canary}):`);
      if (!winner) return;
      const as = winner === deployment.canary && confirm(`Start ${winner} as a canary rollout (OK), ` +
        "or make it stable now (Cancel)?") ? "canary" : "stable";
      await api("POST", `${base}/ab/conclude`, { winner, as, reason: "concluded from the dashboard" });
    } else if (action === "percent") {
      const value = prompt(`New canary percentage for ${name} (0-100):`);
      if (value === null) return;
      await api("PUT", `${base}/canary-percent`, { percent: Number(value), reason: "set from the dashboard" });
    } else {
      const words = { pause: "Pause automatic decisions for", resume: "Resume automatic decisions for",
        promote: "Promote the canary of", rollback: "Roll back the canary of" }[action];
      if (!confirm(`${words} ${name}?`)) return;
      const reason = action === "rollback" ? (prompt("Reason for the rollback:", "rolled back from the dashboard")
        || "rolled back from the dashboard") : `${action} from the dashboard`;
      await api("POST", `${base}/${action}`, { reason });
    }
    await refresh();
  } catch (error) {
    if (error.message !== "unauthorized") showError(error.message);
  }
}

$("#sign-in").addEventListener("submit", (event) => { event.preventDefault(); signIn($("#token").value); });
$("#sign-out").addEventListener("click", () => signOut(""));
$("#window").addEventListener("change", refresh);
for (const button of document.querySelectorAll("#actions button")) {
  button.addEventListener("click", () => act(button.dataset.action));
}
if (token()) signIn(token());
