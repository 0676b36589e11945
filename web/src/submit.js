// The submit form: an image URL or an upload, an algorithm, and a parameter form generated
// from the algorithm's JSON Schema (GET /algorithms/{name}); the server's validation
// errors are shown next to their fields.

import { ApiError, call, callJson } from "./api.js";
import { el, replace } from "./dom.js";

export function submitView(root, signal, navigate) {
  const errors = new Map();
  const errorFor = (field) => {
    if (!errors.has(field)) errors.set(field, el("p", { className: "field-error", id: `error-${field}` }));
    return errors.get(field);
  };
  const source = el("select", { id: "image-source", onchange: () => showSource() },
    el("option", { value: "url", text: "Image URL" }),
    el("option", { value: "upload", text: "Upload a file" }));
  const urlInput = el("input", { id: "image_url", name: "image_url", type: "url", placeholder: "https://…" });
  const fileInput = el("input", { id: "image", name: "image", type: "file", accept: "image/*,.svs,.tif,.tiff,.ndpi,.mrxs,.scn" });
  const urlField = field("Image URL", "image_url", urlInput, errorFor("image_url"));
  const fileField = field("Image file", "image", fileInput, errorFor("image"));
  const algorithm = el("select", { id: "algorithm_name", name: "algorithm_name", onchange: () => loadSchema() });
  const callback = el("input", { id: "callback_url", name: "callback_url", type: "url", placeholder: "optional" });
  const parameters = el("div", { id: "parameter-fields", className: "field" });
  const general = el("p", { className: "field-error", id: "error-general" });
  const submitButton = el("button", { type: "submit", id: "submit-job", text: "Submit" });
  const form = el("form", { className: "submit", id: "submit-form", novalidate: true },
    el("label", { for: "image-source", text: "Image" }), el("div", { className: "field" }, source),
    ...urlField, ...fileField,
    ...field("Algorithm", "algorithm_name", algorithm, errorFor("algorithm_name")),
    el("label", { text: "Parameters" }), parameters,
    ...field("Callback URL", "callback_url", callback, errorFor("callback_url")),
    el("div", { className: "actions" }, submitButton, general));
  replace(root, el("h1", { text: "Submit a job" }), form);
  let schema = { properties: {} };

  function showSource() {
    const upload = source.value === "upload";
    for (const node of urlField) node.hidden = upload;
    for (const node of fileField) node.hidden = !upload;
  }
  showSource();

  async function loadAlgorithms() {
    const listing = await callJson("/algorithms");
    for (const entry of listing.algorithms) {
      algorithm.append(el("option", { value: entry.name, text: `${entry.name} — ${entry.summary}` }));
    }
    await loadSchema();
  }

  async function loadSchema() {
    if (!algorithm.value) return;
    const detail = await callJson(`/algorithms/${encodeURIComponent(algorithm.value)}`);
    if (signal.aborted) return;
    schema = detail.parameters || { properties: {} };
    const rows = [];
    for (const [name, property] of Object.entries(schema.properties || {})) {
      rows.push(parameterField(name, property, errorFor(`param-${name}`)));
    }
    rows.push(errorFor("parameters"));
    replace(parameters, rows.length > 1 ? rows : [el("p", { className: "notice", text: "No parameters." }), ...rows]);
  }

  function collectParameters() {
    const values = {};
    for (const [name, property] of Object.entries(schema.properties || {})) {
      const input = form.querySelector(`[data-parameter="${CSS.escape(name)}"]`);
      if (!input) continue;
      const type = Array.isArray(property.type) ? property.type[0] : property.type;
      if (type === "boolean") {
        if (input.checked !== Boolean(property.default)) values[name] = input.checked;
        continue;
      }
      const text = input.value.trim();
      if (text === "") continue;
      if (type === "number" || type === "integer") values[name] = Number(text);
      else if (type === "array" || type === "object") {
        try { values[name] = JSON.parse(text); } catch { values[name] = text; }
      } else values[name] = text;
    }
    return values;
  }

  function showErrors(error) {
    for (const node of errors.values()) node.textContent = "";
    general.textContent = "";
    const details = (error instanceof ApiError && error.body.details) || {};
    let placed = false;
    for (const [key, messages] of Object.entries(details)) {
      if (key === "available") continue;
      if (key === "parameters" && messages && !Array.isArray(messages) && typeof messages === "object") {
        for (const [name, inner] of Object.entries(messages)) {
          const target = errors.get(`param-${name}`) || errorFor("parameters");
          target.textContent = text(inner);
          placed = true;
        }
      } else if (errors.has(key)) {
        errors.get(key).textContent = text(messages);
        placed = true;
      }
    }
    if (!placed) general.textContent = error.message;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submitButton.disabled = true;
    try {
      const fields = { algorithm_name: algorithm.value, parameters: collectParameters() };
      if (callback.value.trim()) fields.callback_url = callback.value.trim();
      let options;
      if (source.value === "upload") {
        const data = new FormData();
        if (fileInput.files[0]) data.append("image", fileInput.files[0]);
        data.append("algorithm_name", fields.algorithm_name);
        data.append("parameters", JSON.stringify(fields.parameters));
        if (fields.callback_url) data.append("callback_url", fields.callback_url);
        options = { method: "POST", body: data };
      } else {
        fields.image_url = urlInput.value.trim();
        options = {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(fields),
        };
      }
      const response = await call("/jobs", options);
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new ApiError(response.status, body);
      navigate(`#/jobs/${encodeURIComponent(body.job_id)}`);
    } catch (error) {
      showErrors(error);
    } finally {
      submitButton.disabled = false;
    }
  });

  loadAlgorithms().catch((error) => { general.textContent = error.message; });
}

function text(messages) {
  if (Array.isArray(messages)) return messages.map(text).join(" ");
  if (messages && typeof messages === "object") {
    return Object.entries(messages).map(([k, v]) => `${k}: ${text(v)}`).join(" ");
  }
  return String(messages);
}

function field(label, name, input, error) {
  return [
    el("label", { for: input.id, text: label }),
    el("div", { className: "field" }, input, error),
  ];
}

function parameterField(name, property, error) {
  const type = Array.isArray(property.type) ? property.type[0] : property.type;
  const id = `param-${name}`;
  let input;
  if (Array.isArray(property.enum)) {
    input = el("select", { id, dataset: { parameter: name } },
      property.nullable || property.default == null ? el("option", { value: "", text: "(default)" }) : null,
      property.enum.filter((v) => v !== null).map((v) => el("option", { value: String(v), text: String(v), selected: v === property.default })));
  } else if (type === "boolean") {
    input = el("input", { id, type: "checkbox", dataset: { parameter: name }, checked: Boolean(property.default) });
  } else if (type === "number" || type === "integer") {
    input = el("input", {
      id, type: "number", dataset: { parameter: name },
      step: type === "integer" ? "1" : "any",
      min: property.minimum, max: property.maximum,
      placeholder: property.default != null ? String(property.default) : "(default)",
    });
  } else {
    input = el("input", {
      id, type: "text", dataset: { parameter: name },
      placeholder: property.default != null ? JSON.stringify(property.default) : "(default)",
    });
  }
  const range = [
    property.minimum !== undefined ? `min ${property.minimum}` : null,
    property.maximum !== undefined ? `max ${property.maximum}` : null,
  ].filter(Boolean).join(", ");
  return el("div", { className: "field parameter" },
    el("label", { for: id, text: name }),
    input,
    property.description || range
      ? el("span", { className: "hint", text: [property.description, range && `(${range})`].filter(Boolean).join(" ") })
      : null,
    error);
}
