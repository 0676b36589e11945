// The jobs list: status, algorithm, progress, age; filters, cursor paging, polled while shown.

import { callJson } from "./api.js";
import { age, el, replace, statusLine } from "./dom.js";

const STATUSES = ["", "Pending", "Running", "Completed", "Failed", "Cancelled"];
const POLL_MS = 2000;
const PAGE_SIZE = 25;

export function jobsView(root, signal) {
  const state = { status: "", algorithm: "", cursors: [""], page: 0, next: null };
  const statusSelect = el(
    "select",
    { id: "filter-status", onchange: () => restart({ status: statusSelect.value }) },
    STATUSES.map((s) => el("option", { value: s, text: s || "any status" })),
  );
  const algorithmSelect = el(
    "select",
    { id: "filter-algorithm", onchange: () => restart({ algorithm: algorithmSelect.value }) },
    el("option", { value: "", text: "any algorithm" }),
  );
  const body = el("tbody", { id: "jobs-body" });
  const previous = el("button", { type: "button", id: "page-prev", text: "Newer", onclick: () => move(-1) });
  const next = el("button", { type: "button", id: "page-next", text: "Older", onclick: () => move(1) });
  const pageLabel = el("span", { id: "page-label" });
  replace(
    root,
    el("h1", { text: "Jobs" }),
    el("div", { className: "filters" },
      el("label", { for: "filter-status", text: "Status" }), statusSelect,
      el("label", { for: "filter-algorithm", text: "Algorithm" }), algorithmSelect,
      el("a", { href: "#/submit", text: "Submit a job" })),
    el("table", { id: "jobs-table" },
      el("thead", {}, el("tr", {},
        ["Job", "Status", "Algorithm", "Progress", "Created"].map((h) => el("th", { text: h })))),
      body),
    el("div", { className: "pager" }, previous, pageLabel, next),
  );

  callJson("/algorithms").then((listing) => {
    for (const algorithm of listing.algorithms) {
      algorithmSelect.append(el("option", { value: algorithm.name, text: algorithm.name }));
    }
  }).catch(() => {});

  function restart(change) {
    Object.assign(state, change, { cursors: [""], page: 0 });
    refresh();
  }

  function move(step) {
    if (step > 0 && !state.next) return;
    if (step > 0 && state.cursors.length === state.page + 1) state.cursors.push(state.next);
    state.page = Math.max(0, state.page + step);
    refresh();
  }

  async function refresh() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) query.set("status", state.status);
    if (state.algorithm) query.set("algorithm_name", state.algorithm);
    if (state.cursors[state.page]) query.set("cursor", state.cursors[state.page]);
    try {
      const page = await callJson(`/jobs?${query}`);
      if (signal.aborted) return;
      state.next = page.next_cursor;
      replace(body, page.jobs.length ? page.jobs.map(row) : [
        el("tr", {}, el("td", { colspan: "5", className: "notice", text: "No jobs." })),
      ]);
      previous.disabled = state.page === 0;
      next.disabled = !state.next;
      pageLabel.textContent = `page ${state.page + 1}`;
      statusLine("");
    } catch (error) {
      statusLine(`Could not list jobs: ${error.message}`);
    }
  }

  refresh();
  const timer = setInterval(refresh, POLL_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

function row(job) {
  const link = el("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, text: job.job_id });
  return el("tr", { dataset: { jobId: job.job_id } },
    el("td", { className: "mono" }, link),
    el("td", { className: `status status-${job.status}`, text: job.status }),
    el("td", { text: job.algorithm_name }),
    el("td", {}, el("progress", { max: "100", value: String(job.progress_percent || 0) }),
      ` ${Math.round(job.progress_percent || 0)} %`),
    el("td", { title: job.created_at, text: age(job.created_at) }),
  );
}
