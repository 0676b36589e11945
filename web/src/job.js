// One job: its details, progress, error, callback deliveries, cancel, downloads, and its
// image in deep zoom with the detections drawn over it.

import { ApiError, call, callJson } from "./api.js";
import { age, el, replace, statusLine } from "./dom.js";
import { openImage } from "./image.js";

const POLL_MS = 1500;
const FINAL = new Set(["Completed", "Failed", "Cancelled"]);

export function jobView(root, signal, jobId) {
  const base = `/jobs/${encodeURIComponent(jobId)}`;
  const title = el("h1", {}, "Job ", el("span", { className: "mono", text: jobId }));
  const details = el("dl", { className: "details", id: "job-details" });
  const progress = el("progress", { id: "job-progress", max: "100", value: "0" });
  const errorBox = el("pre", { className: "error", id: "job-error", hidden: true });
  const cancel = el("button", { type: "button", id: "cancel-job", text: "Cancel job", onclick: () => cancelJob() });
  const downloads = el("div", { className: "toolbar", id: "downloads" });
  const deliveries = el("div", { id: "deliveries" });
  const imageArea = el("section", { id: "image-area" });
  replace(root, title,
    el("div", { className: "toolbar" }, progress, cancel, downloads),
    errorBox, details, deliveries, imageArea);

  let shownImage = false;
  let image = null;

  async function refresh() {
    let job;
    try {
      job = await callJson(base);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 404) {
        replace(root, el("h1", { text: "No such job" }), el("p", { className: "notice", text: error.message }));
        return "stop";
      }
      statusLine(`Could not read the job: ${error.message}`);
      return;
    }
    if (signal.aborted) return "stop";
    statusLine("");
    render(job);
    if (!shownImage && FINAL.has(job.status)) {
      shownImage = true;
      image = openImage(imageArea, base, signal);
    }
    if (job.status === "Completed" && image) image.resultReady();
    return FINAL.has(job.status) ? "stop" : undefined;
  }

  function render(job) {
    const rows = [
      ["Status", el("span", { className: `status status-${job.status}`, id: "job-status", text: job.status })],
      ["Algorithm", job.algorithm_name],
      ["Parameters", el("code", { id: "job-parameters", text: JSON.stringify(job.parameters) })],
      ["Image URL", el("span", { id: "job-image-url", text: job.image_url || "(uploaded)" })],
      ["Progress", `${Math.round(job.progress_percent || 0)} %`],
      ["Attempts", String(job.attempts)],
      ["Created", `${job.created_at} (${age(job.created_at)})`],
      ["Started", job.started_at || "—"],
      ["Finished", job.finished_at || "—"],
    ];
    replace(details, rows.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", {}, value)]));
    progress.value = job.progress_percent || 0;
    errorBox.hidden = !job.error;
    errorBox.textContent = job.error || "";
    cancel.hidden = FINAL.has(job.status);
    cancel.disabled = Boolean(job.cancel_requested);
    replace(downloads, job.status === "Completed" ? [
      download("GeoJSON", `${base}/result`, `${jobId}.geojson`, "download-geojson"),
      download("QuPath", `${base}/result?format=qupath`, `${jobId}-qupath.geojson`, "download-qupath"),
    ] : []);
    renderDeliveries(job.callback);
  }

  function renderDeliveries(callback) {
    if (!callback) { replace(deliveries); return; }
    replace(deliveries,
      el("h2", { text: "Callback" }),
      el("p", {}, el("span", { className: "mono", text: callback.url }), ` — ${callback.state}`),
      el("table", { id: "deliveries-table" },
        el("thead", {}, el("tr", {}, ["At", "HTTP status", "Error", "Seconds"].map((h) => el("th", { text: h })))),
        el("tbody", {}, callback.attempts.map((a) => el("tr", {},
          el("td", { text: a.at }), el("td", { text: a.status_code ?? "—" }),
          el("td", { text: a.error || "" }), el("td", { text: a.duration }))))));
  }

  async function cancelJob() {
    cancel.disabled = true;
    try {
      await callJson(`${base}/cancel`, { method: "POST" });
    } catch (error) {
      statusLine(`Could not cancel: ${error.message}`);
    }
    loop();
  }

  // Downloads go through fetch (to send the API key) and a blob URL.
  function download(label, url, filename, id) {
    return el("button", { type: "button", id, text: `Download ${label}`, onclick: async () => {
      const response = await call(url);
      if (!response.ok) { statusLine(`Download failed: HTTP ${response.status}`); return; }
      const href = URL.createObjectURL(await response.blob());
      const link = el("a", { href, download: filename });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(href), 10000);
    } });
  }

  let timer = null;
  async function loop() {
    clearTimeout(timer);
    const outcome = await refresh();
    if (outcome !== "stop" && !signal.aborted) timer = setTimeout(loop, POLL_MS);
  }
  signal.addEventListener("abort", () => clearTimeout(timer));
  loop();
}
