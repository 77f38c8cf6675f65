// The API key of a service started with SPINE_API_KEYS: asked for when a call answers 401 `unauthorized`, kept in
// this tab's sessionStorage only (never localStorage, never in a URL), and sent as X-API-Key on every call.
"use strict";

(function () {
  const STORAGE_KEY = "spine-xray.api-key";
  const HEADER = "X-API-Key";
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  let memory = null; // where sessionStorage is unavailable (storage disabled): this page's memory only
  let retry = null;

  function stored() {
    try { return sessionStorage.getItem(STORAGE_KEY); } catch { return memory; }
  }

  function store(key) {
    try {
      if (key) sessionStorage.setItem(STORAGE_KEY, key);
      else sessionStorage.removeItem(STORAGE_KEY);
    } catch { memory = key || null; }
  }

  // The headers every request of the page carries: the key when there is one.
  function headers() {
    const key = stored();
    return key ? { [HEADER]: key } : {};
  }

  // The service's refusal of a missing or wrong key (service/core/security.py): HTTP 401, code `unauthorized`.
  function isRefusal(status, body) {
    return status === 401 && Boolean(body) && body.code === "unauthorized";
  }

  // Show the key field; `then` runs again (the call that was refused) once a key is submitted.
  function ask(then) {
    store(null); // the key kept, if any, was refused
    retry = then;
    form.hidden = false;
    input.value = "";
    input.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return input.focus();
    store(key);
    input.value = "";
    form.hidden = true;
    const then = retry;
    retry = null;
    if (then) then();
  });

  // Links to JSON the API guards (`data-keyed`, e.g. "Models (JSON)"): a plain link cannot send the key, so the
  // page fetches with it and opens the answer in a new tab; a 401 asks for the key and tries again.
  async function openKeyed(link) {
    const response = await fetch(link.href, { headers: headers() });
    const text = await response.text();
    let body = null;
    try { body = JSON.parse(text); } catch { /* not JSON: opened as it is */ }
    if (isRefusal(response.status, body)) return ask(() => openKeyed(link));
    const url = URL.createObjectURL(new Blob([text], { type: response.headers.get("content-type") || "application/json" }));
    if (!window.open(url, "_blank")) window.location.href = url; // a blocked pop-up: this tab instead
  }

  for (const link of document.querySelectorAll("a[data-keyed]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      openKeyed(link);
    });
  }

  window.SpineKey = { headers, isRefusal, ask };
})();
