// primaa's web viewer: a hash-routed single-page app (#/jobs, #/submit, #/jobs/<id>).

import { setUpKeyPrompt } from "./api.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { submitView } from "./submit.js";

let current = null;

function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function route() {
  if (current) current.abort();
  current = new AbortController();
  const root = document.getElementById("view");
  const hash = window.location.hash || "#/jobs";
  const job = hash.match(/^#\/jobs\/(.+)$/);
  if (job) jobView(root, current.signal, decodeURIComponent(job[1]));
  else if (hash === "#/submit") submitView(root, current.signal, navigate);
  else jobsView(root, current.signal);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpKeyPrompt();
  window.addEventListener("hashchange", route);
  route();
});
