// tunehub dashboard: fills each page's tables and plots from its JSON endpoint and refreshes them.
// The page says which endpoint in <body data-api>; every number is formatted here, once.
// Cells carry data-field and data-value (the raw number) so tools and tests can read them.
"use strict";

(() => {
  const body = document.body;
  const pollMs = Number(body.dataset.pollMs) || 3000;
  const DASH = "/dashboard";

  // --- formatting ------------------------------------------------------------------
  const fmt = {
    latency(s) {
      if (s === null || s === undefined) return "—";
      if (s < 1e-3) return (s * 1e6).toFixed(1) + " µs";
      if (s < 1) return (s * 1e3).toFixed(3) + " ms";
      return s.toFixed(3) + " s";
    },
    duration(s) {
      if (s === null || s === undefined) return "—";
      s = Math.round(s);
      if (s < 60) return s + " s";
      if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
      return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    },
    pct(x) { return x === null || x === undefined ? "—" : (100 * x).toFixed(1) + " %"; },
    ratio(x, digits = 2) { return x === null || x === undefined ? "—" : x.toFixed(digits); },
    gflop(flops) { return flops ? (flops / 1e9).toPrecision(3) : "—"; },
  };

  // --- DOM helpers -----------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // A table cell showing `text`, tagged with the field it shows and its raw value.
  function td(field, text, value) {
    return el("td", { "data-field": field, "data-value": value === undefined || value === null ? "" : String(value) }, text);
  }

  function fillTable(id, rows, rowFn, empty) {
    const tbody = document.querySelector(`#${id} tbody`);
    const cols = document.querySelectorAll(`#${id} thead th`).length;
    const trs = rows.map(rowFn);
    if (!trs.length) trs.push(el("tr", {}, el("td", { colspan: cols, class: "empty" }, empty || "nothing yet")));
    tbody.replaceChildren(...trs);
  }

  function setStatus(text) { document.getElementById("status").textContent = text; }

  // --- data ------------------------------------------------------------------------
  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401 || r.status === 403) {
      location.href = `${DASH}/login?next=${encodeURIComponent(location.pathname + location.search)}`;
      throw new Error("signed out");
    }
    const data = await r.json();
    if (!r.ok) throw new Error(data.detail || r.statusText);
    return data;
  }

  // Fetch url() now and every pollMs; render(data) each time. body[data-loaded] counts renders.
  // Returns a function that refreshes at once (after a filter changes).
  function poll(url, render) {
    let renders = 0, timer = null, busy = false;
    const live = document.getElementById("live");
    const tick = async () => {
      clearTimeout(timer);
      if (busy) { timer = setTimeout(tick, 50); return; }
      busy = true;
      try {
        render(await getJSON(url()));
        body.dataset.loaded = String(++renders);
        live && live.classList.remove("stale");
        setStatus("");
      } catch (err) {
        live && live.classList.add("stale");
        setStatus(`could not refresh: ${err.message}`);
      } finally {
        busy = false;
        timer = setTimeout(tick, pollMs);
      }
    };
    tick();
    return tick;
  }

  // --- plots -----------------------------------------------------------------------
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  // A uPlot chart in `holder`, made once and given new data on each refresh (remade if the series change).
  function chart(holder, xLabel) {
    let plot = null, key = "";
    return (labels, data) => {
      const sig = labels.join("\u0000");
      if (!plot || sig !== key) {
        if (plot) plot.destroy();
        holder.replaceChildren();
        const series = [{ label: xLabel }].concat(labels.map((label, i) => ({
          label, stroke: i === 0 ? "#000" : PALETTE[(i - 1) % PALETTE.length], width: i === 0 ? 2 : 1,
          paths: uPlot.paths.stepped({ align: 1 }),  // best so far holds until the next improvement
          value: (u, v) => (v === null || v === undefined ? "—" : fmt.latency(v / 1e6)),
        })));
        plot = new uPlot({
          width: Math.max(holder.clientWidth, 320), height: 260, series,
          scales: { x: { time: false }, y: { distr: 3 } },
          axes: [{ label: xLabel }, { label: "µs", size: 60 }],
        }, data, holder);
        key = sig;
      } else {
        plot.setData(data);
      }
    };
  }

  // --- pages -----------------------------------------------------------------------
  const statusBadge = (s) => el("span", { class: `badge ${s}` }, s);

  function jobsPage() {
    const filter = document.getElementById("status-filter");
    const render = (jobs) => {
      fillTable("jobs", jobs, (j) => el("tr", { "data-id": j.id },
        el("td", {}, el("a", { href: `${DASH}/jobs/${j.id}` }, `#${j.id}`)),
        td("model_name", j.model_name, j.model_name),
        el("td", { "data-field": "status", "data-value": j.status }, statusBadge(j.status)),
        td("target_key", j.target_key, j.target_key),
        el("td", { "data-field": "progress", "data-value": j.progress },
          el("progress", { max: "1", value: String(j.progress) }), " ", fmt.pct(j.progress)),
        td("trials_done", `${j.trials_done} / ${j.trials}`, j.trials_done),
        td("tasks_tuned", `${j.tasks_tuned} / ${j.tasks}`, j.tasks_tuned),
        td("est_total_s", fmt.latency(j.est_total_s), j.est_total_s),
        td("elapsed_s", fmt.duration(j.elapsed_s), j.elapsed_s),
        td("eta_s", fmt.duration(j.eta_s), j.eta_s),
      ), "no jobs");
    };
    const refresh = poll(() => `${body.dataset.api}${filter.value ? `?status=${filter.value}` : ""}`, render);
    filter.addEventListener("change", refresh);
  }

  function jobPage() {
    const byTrials = chart(document.getElementById("plot-trials"), "trials");
    const byTime = chart(document.getElementById("plot-time"), "seconds since start");
    const taskSel = document.getElementById("trial-task");
    const outcomeSel = document.getElementById("trial-outcome");
    const sortSel = document.getElementById("trial-sort");
    let detail = null;

    const renderTrials = () => {
      if (!detail) return;
      const names = Object.fromEntries(detail.tasks.map((t) => [t.id, t.name]));
      let rows = detail.trials.filter((t) =>
        (!taskSel.value || String(t.task_id) === taskSel.value) &&
        (!outcomeSel.value || (outcomeSel.value === "valid") === (t.latency_s !== null)));
      if (sortSel.value === "latency") {
        rows = rows.slice().sort((a, b) => (a.latency_s ?? Infinity) - (b.latency_s ?? Infinity));
      }
      document.getElementById("trial-count").textContent = `${rows.length} of ${detail.job.trials_done} trials`;
      fillTable("trials", rows.slice(0, 300), (t) => el("tr", { "data-id": t.n },
        td("n", t.n, t.n),
        td("task", names[t.task_id] || t.task_id, t.task_id),
        td("candidate_id", t.candidate_id, t.candidate_id),
        td("worker_id", t.worker_id, t.worker_id),
        td("latency_s", fmt.latency(t.latency_s), t.latency_s),
        el("td", { "data-field": "error_kind", "data-value": t.error_kind || "", title: t.error || "" }, t.error_kind || ""),
        td("flagged", t.flagged ? "yes" : "", t.flagged),
        td("at_s", fmt.duration(t.at_s), t.at_s),
      ), "no trials match");
    };

    const render = (d) => {
      detail = d;
      const j = d.job;
      const badge = document.getElementById("job-status");
      badge.textContent = j.status;
      badge.className = `badge ${j.status}`;
      const facts = [
        ["model", j.model_name, "model_name", j.model_name], ["target", j.target_key, "target_key", j.target_key],
        ["trials", `${j.trials_done} / ${j.trials}`, "trials_done", j.trials_done],
        ["progress", fmt.pct(j.progress), "progress", j.progress],
        ["elapsed", fmt.duration(j.elapsed_s), "elapsed_s", j.elapsed_s], ["ETA", fmt.duration(j.eta_s), "eta_s", j.eta_s],
        ["estimated model latency", fmt.latency(j.est_total_s), "est_total_s", j.est_total_s],
        ["tasks tuned", `${j.tasks_tuned} / ${j.tasks}`, "tasks_tuned", j.tasks_tuned],
      ];
      if (j.error) facts.push(["error", j.error, "error", j.error]);
      document.getElementById("summary").replaceChildren(...facts.flatMap(([k, text, field, value]) =>
        [el("dt", {}, k), el("dd", { "data-field": field, "data-value": value ?? "" }, text)]));

      fillTable("tasks", d.tasks, (t) => el("tr", { "data-id": t.id },
        td("name", t.name, t.name),
        el("td", { "data-field": "workload_hash", "data-value": t.workload_hash },
          el("a", { href: `${DASH}/workloads?target=${encodeURIComponent(j.target_key)}` }, t.workload_hash)),
        td("weight", t.weight, t.weight),
        td("trials_done", t.trials_done, t.trials_done),
        td("trials_valid", t.trials_valid, t.trials_valid),
        td("first_latency_s", fmt.latency(t.first_latency_s), t.first_latency_s),
        td("best_latency_s", fmt.latency(t.best_latency_s), t.best_latency_s),
        td("speedup", t.speedup ? `${fmt.ratio(t.speedup)}×` : "—", t.speedup),
        td("share", fmt.pct(t.share), t.share),
        td("gflops", t.flops && t.best_latency_s ? fmt.ratio(t.flops / t.best_latency_s / 1e9, 1) : "—",
          t.flops && t.best_latency_s ? t.flops / t.best_latency_s / 1e9 : null),
      ), "no tasks");

      const chosen = taskSel.value;
      taskSel.replaceChildren(el("option", { value: "" }, "all"),
        ...d.tasks.map((t) => el("option", { value: String(t.id) }, t.name)));
      taskSel.value = chosen;
      renderTrials();

      const us = (v) => (v === null || v === undefined ? null : v * 1e6);
      const labels = ["estimated model"].concat(d.tasks.map((t) => t.name));
      const xs = d.curve.map((p) => p.n);
      byTrials(labels, [xs, d.curve.map((p) => us(p.est_total_s)),
        ...d.tasks.map((_, i) => d.curve.map((p) => us(p.task_best_s[i])))]);
      byTime(["estimated model"], [d.curve.map((p) => p.at_s), d.curve.map((p) => us(p.est_total_s))]);
    };
    for (const s of [taskSel, outcomeSel, sortSel]) s.addEventListener("change", renderTrials);
    poll(() => body.dataset.api, render);
  }

  function workersPage() {
    poll(() => body.dataset.api, (workers) => fillTable("workers", workers, (w) => {
      const kinds = Object.entries(w.errors).map(([k, n]) => `${k} ${n}`).join(" · ");
      const cal = w.calibration;
      return el("tr", { "data-id": w.id },
        td("name", `${w.name} (#${w.id})`, w.name),
        td("target_key", w.target_key, w.target_key),
        td("seen_ago_s", `${fmt.duration(w.seen_ago_s)} ago`, w.seen_ago_s),
        td("measurements", `${w.valid} valid / ${w.measurements}`, w.measurements),
        td("per_minute", fmt.ratio(w.per_minute, 1), w.per_minute),
        td("error_rate", fmt.pct(w.error_rate), w.error_rate),
        td("errors", kinds || "none", JSON.stringify(w.errors)),
        el("td", { "data-field": "calibration", "data-value": cal ? cal.status : "" },
          cal ? el("span", { class: `badge ${cal.status}` }, cal.status) : "—",
          cal && cal.ratio ? ` ×${fmt.ratio(cal.ratio)}` : ""),
        td("suspect", w.suspect === null ? "—" : (w.suspect ? "suspect" : "no"), w.suspect),
      );
    }, "no workers registered"));
  }

  function workloadsPage() {
    const target = body.dataset.target;
    const select = document.getElementById("target-select");
    select.addEventListener("change", () => { location.search = `?target=${encodeURIComponent(select.value)}`; });
    if (!target) { body.dataset.loaded = "1"; return; }
    poll(() => `${body.dataset.api}?target=${encodeURIComponent(target)}`, (rows) => fillTable("workloads", rows, (w) =>
      el("tr", { "data-id": w.id },
        td("hash", w.hash, w.hash),
        td("family", w.family || "—", w.family),
        td("flops", fmt.gflop(w.flops), w.flops),
        td("measurements", w.measurements, w.measurements),
        td("valid", w.valid, w.valid),
        td("best_latency_s", fmt.latency(w.best_latency_s), w.best_latency_s),
        td("gflops", fmt.ratio(w.gflops, 1), w.gflops),
        td("best_candidate_id", w.best_candidate_id ?? "—", w.best_candidate_id),
        td("models", w.models.join(", ") || "—", w.models.join(",")),
      ), "no workloads on this target"));
  }

  const pages = { jobs: jobsPage, job: jobPage, workers: workersPage, workloads: workloadsPage };
  (pages[body.dataset.page] || (() => {}))();
})();
