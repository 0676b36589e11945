// A job's image in deep zoom (OpenSeadragon over /jobs/{id}/image.dzi) with the result
// drawn on a canvas over it. Only the objects in view are asked for
// (/jobs/{id}/result?bbox=...&limit=...), so a result of any size pans and zooms smoothly.

import OpenSeadragon from "openseadragon";
import { authHeaders, call } from "./api.js";
import { el, replace } from "./dom.js";
import { drawOverlay } from "./overlay.js";

const WINDOW_LIMIT = 5000;
const SETTLE_MS = 150;

// OpenSeadragon adds an inline <style> (a focus outline rule for touch screens) unless an
// element matching style[data-openseadragon-mobile-css] exists. Inline styles break the
// page's CSP (even an empty <style> is one), so the marker is a "style" element of a
// namespace of our own, which no browser treats as a stylesheet; the rule is in viewer.css.
function claimOsdStyleMarker() {
  if (document.querySelector("style[data-openseadragon-mobile-css]")) return;
  const marker = document.createElementNS("urn:primaa:marker", "style");
  marker.setAttribute("data-openseadragon-mobile-css", "true");
  document.head.append(marker);
}

export function openImage(area, base, signal) {
  claimOsdStyleMarker();
  const osdHost = el("div", { className: "osd", id: "osd" });
  const canvas = el("canvas", { className: "overlay", id: "overlay" });
  const toggle = el("input", { type: "checkbox", id: "toggle-overlay", checked: true });
  const count = el("span", { id: "overlay-count", className: "notice" });
  const notice = el("p", { className: "notice", id: "image-notice" });
  replace(area,
    el("h2", { text: "Image" }),
    el("div", { className: "toolbar" },
      el("label", {}, toggle, " Show detections"), count),
    notice,
    el("div", { className: "viewer-wrap", id: "viewer-wrap" }, osdHost, canvas));

  let wanted = false;
  const handle = { resultReady() { wanted = true; } };
  // Ask first, so an image that is not available is said in words (OpenSeadragon would
  // only log its failure to the console).
  call(`${base}/image.dzi`).then(async (response) => {
    if (signal.aborted) return;
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      notice.textContent = `The image cannot be shown: ${body.error || `HTTP ${response.status}`}.`;
      return;
    }
    const shown = showImage({ osdHost, canvas, toggle, count, notice }, base, signal);
    handle.resultReady = shown.resultReady;
    if (wanted) shown.resultReady();
  }).catch((error) => { notice.textContent = `The image cannot be shown: ${error.message}.`; });
  return {
    resultReady() { handle.resultReady(); },
  };
}

function showImage({ osdHost, canvas, toggle, count, notice }, base, signal) {
  const viewer = OpenSeadragon({
    element: osdHost,
    tileSources: `${base}/image.dzi`,
    loadTilesWithAjax: true,
    ajaxHeaders: authHeaders(),
    drawer: "canvas",
    showNavigationControl: false,
    showNavigator: false,
    visibilityRatio: 0.5,
    maxZoomPixelRatio: 4,
    crossOriginPolicy: false,
  });
  signal.addEventListener("abort", () => viewer.destroy());

  let windowData = null;
  let resultReady = false;
  let pending = null;
  let settleTimer = null;

  const tiledImage = () => viewer.world.getItemCount() ? viewer.world.getItemAt(0) : null;

  function redraw() {
    const image = tiledImage();
    const rect = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, rect.width, rect.height);
    if (!image || !windowData || !toggle.checked) return;
    const origin = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const unit = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(1, 0));
    drawOverlay(context, windowData, { scale: unit.x - origin.x, x: origin.x, y: origin.y });
  }

  async function fetchWindow() {
    const image = tiledImage();
    if (!image || !resultReady) return;
    const bounds = image.viewportToImageRectangle(viewer.viewport.getBounds(true));
    const size = image.getContentSize();
    const x0 = Math.max(0, Math.floor(bounds.x));
    const y0 = Math.max(0, Math.floor(bounds.y));
    const x1 = Math.min(size.x, Math.ceil(bounds.x + bounds.width));
    const y1 = Math.min(size.y, Math.ceil(bounds.y + bounds.height));
    if (x1 <= x0 || y1 <= y0) return;
    if (pending) pending.abort();
    pending = new AbortController();
    const query = new URLSearchParams({ bbox: `${x0},${y0},${x1},${y1}`, limit: String(WINDOW_LIMIT) });
    try {
      const response = await call(`${base}/result?${query}`, { signal: pending.signal });
      if (!response.ok) return;
      windowData = await response.json();
      const view = windowData.properties.view;
      count.textContent = view.truncated
        ? `${view.objects_in_view.toLocaleString("en")} objects in view (showing ${view.returned.toLocaleString("en")} and their density); ${view.objects_total.toLocaleString("en")} in all`
        : `${view.objects_in_view.toLocaleString("en")} objects in view; ${view.objects_total.toLocaleString("en")} in all`;
      canvas.dataset.objects = String(view.returned);
      redraw();
    } catch (error) {
      if (error.name !== "AbortError") count.textContent = `Could not load detections: ${error.message}`;
    }
  }

  function settle() {
    clearTimeout(settleTimer);
    settleTimer = setTimeout(fetchWindow, SETTLE_MS);
  }

  viewer.addHandler("open", () => { notice.textContent = ""; settle(); });
  viewer.addHandler("open-failed", (event) => {
    notice.textContent = `The image cannot be shown: ${event.message || "it could not be opened"}.`;
  });
  viewer.addHandler("update-viewport", redraw);
  viewer.addHandler("animation-finish", settle);
  viewer.addHandler("resize", settle);
  toggle.addEventListener("change", redraw);

  return {
    resultReady() {
      if (resultReady) return;
      resultReady = true;
      settle();
    },
  };
}
