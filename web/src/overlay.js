// Drawing a result window on a 2D canvas: points as dots, polygons as outlines, and
// where the window was truncated, the density of objects per cell under them.

const POINT_COLOUR = "rgba(0, 230, 118, 0.95)";
const POLYGON_COLOUR = "rgba(255, 214, 0, 0.95)";

// transform: element pixels = image pixels * scale + (x, y).
export function drawOverlay(context, feature, transform) {
  const { scale, x, y } = transform;
  const view = feature.properties.view;
  if (view && view.density) drawDensity(context, view, transform);
  const geometry = feature.geometry;
  if (!geometry) return;
  if (geometry.type === "MultiPoint") {
    const radius = Math.max(1.5, Math.min(6, 4 * scale));
    context.fillStyle = POINT_COLOUR;
    context.beginPath();
    for (const [px, py] of geometry.coordinates) {
      const cx = px * scale + x;
      const cy = py * scale + y;
      context.moveTo(cx + radius, cy);
      context.arc(cx, cy, radius, 0, 2 * Math.PI);
    }
    context.fill();
  } else if (geometry.type === "MultiPolygon") {
    context.strokeStyle = POLYGON_COLOUR;
    context.lineWidth = 2;
    context.beginPath();
    for (const polygon of geometry.coordinates) {
      for (const ring of polygon) {
        ring.forEach(([px, py], i) => {
          const cx = px * scale + x;
          const cy = py * scale + y;
          if (i === 0) context.moveTo(cx, cy); else context.lineTo(cx, cy);
        });
        context.closePath();
      }
    }
    context.stroke();
  }
}

function drawDensity(context, view, transform) {
  const { scale, x, y } = transform;
  const { cell_size: cell, counts } = view.density;
  const [x0, y0] = view.bbox;
  let highest = 0;
  for (const row of counts) for (const value of row) highest = Math.max(highest, value);
  if (!highest) return;
  counts.forEach((row, r) => row.forEach((value, c) => {
    if (!value) return;
    context.fillStyle = `rgba(255, 64, 129, ${(0.15 + 0.5 * value / highest).toFixed(3)})`;
    context.fillRect((x0 + c * cell) * scale + x, (y0 + r * cell) * scale + y, cell * scale, cell * scale);
  }));
}
