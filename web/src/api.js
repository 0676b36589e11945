// Calls to the primaa API with the browser session's API key, and the prompt for one.

const KEY_STORAGE = "primaa-api-key";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

let keyWaiters = [];

// Show the key prompt; resolves once the person has entered a key.
export function askForKey(message) {
  const prompt = document.getElementById("key-prompt");
  const error = document.getElementById("key-error");
  error.textContent = message || "";
  prompt.hidden = false;
  document.getElementById("key-input").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

export function setUpKeyPrompt() {
  const form = document.getElementById("key-form");
  const forget = document.getElementById("forget-key");
  forget.hidden = !apiKey();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key-input");
    const key = input.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    input.value = "";
    document.getElementById("key-prompt").hidden = true;
    forget.hidden = false;
    const waiting = keyWaiters;
    keyWaiters = [];
    waiting.forEach((resolve) => resolve());
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    forget.hidden = true;
    window.location.reload();
  });
}

// fetch() with the key; on 401 asks for a key and tries again. Returns the Response.
export async function call(path, options = {}) {
  for (;;) {
    const headers = { ...(options.headers || {}), ...authHeaders() };
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    const body = await response.json().catch(() => ({}));
    await askForKey(apiKey() ? body.error || "the API key is not valid" : "");
  }
}

// A JSON call: the parsed body, or an ApiError carrying the server's JSON error.
export async function callJson(path, options = {}) {
  const response = await call(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}
