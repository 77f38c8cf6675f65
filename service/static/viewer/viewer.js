// The viewer page: sends the films to POST /classify, shows the label, scores, warnings, Cobb angles and
// downloads, and hands the film and masks to film.js. Every API error is shown with the API's own message; a
// 401 `unauthorized` also asks for an API key (apikey.js), sent on every call, and then retries the call.
"use strict";

(function () {
  const { FilmView, colourOf, hex } = window.SpineFilm;
  const { SpineKey } = window;
  const $ = (id) => document.getElementById(id);
  const FILE_INPUTS = { AP: $("ap-file"), LAT: $("lat-file") };
  const film = new FilmView($("film"));
  const state = { views: {}, current: null, result: null, paths: {}, urls: [] };

  // ------------------------------------------------------------------ small helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "for") node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function setStatus(kind, text, detail) {
    const status = $("status");
    status.dataset.state = kind;
    status.replaceChildren(el("span", { text }));
    if (detail) status.append(el("span", { className: "api-message", text: detail }));
  }

  // The service's error body is {"code", "message" (or "detail" before the rename), ...}; KServe routes use "error".
  async function apiError(response) {
    const text = await response.blob.text();
    let body = null;
    try { body = JSON.parse(text); } catch { /* not JSON: shown as text below */ }
    const message = body ? (body.message ?? body.detail ?? body.error) : null;
    const code = body && body.code ? ` (${body.code})` : "";
    return {
      needsKey: SpineKey.isRefusal(response.status, body),
      summary: `The service answered HTTP ${response.status}${code}:`,
      message: typeof message === "string" ? message : (message ? JSON.stringify(message) : text.slice(0, 500) || "no message"),
    };
  }

  // XMLHttpRequest rather than fetch: it reports upload progress, which a large DICOM needs.
  function post(url, form, onUploadProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.responseType = "blob";
      for (const [name, value] of Object.entries(SpineKey.headers())) xhr.setRequestHeader(name, value);
      if (onUploadProgress) {
        xhr.upload.onprogress = (e) => { if (e.lengthComputable) onUploadProgress(e.loaded / e.total); };
        xhr.upload.onload = () => onUploadProgress(1);
      }
      xhr.onload = () => resolve({ ok: xhr.status >= 200 && xhr.status < 300, status: xhr.status, blob: xhr.response });
      xhr.onerror = () => reject(new Error("the service could not be reached (network error)"));
      xhr.send(form);
    });
  }

  function downloadLink(text, href, filename) {
    return el("a", { href, download: filename, className: "button", text });
  }

  function blobUrl(blob) {
    const url = URL.createObjectURL(blob);
    state.urls.push(url);
    return url;
  }

  function base64Bytes(data) {
    const bin = atob(data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  // ------------------------------------------------------------------ analyse

  async function analyse(event) {
    event.preventDefault();
    const files = { AP: FILE_INPUTS.AP.files[0] || null, LAT: FILE_INPUTS.LAT.files[0] || null };
    const form = new FormData();
    if (files.AP) form.append("ap", files.AP);
    if (files.LAT) form.append("lat", files.LAT);
    form.append("include_masks", "true");
    form.append("mask_format", "png");
    reset();
    busy(true);
    const started = performance.now();
    let timer = null;
    try {
      setStatus("working", "Uploading…");
      const response = await post("/classify", form, (fraction) => {
        $("progress").value = Math.round(100 * fraction);
        if (fraction < 1) return setStatus("working", `Uploading… ${Math.round(100 * fraction)} %`);
        if (timer) return;
        $("progress").removeAttribute("value"); // indeterminate while the server works
        const tick = () => setStatus("working", `Analysing on the server… ${((performance.now() - started) / 1000).toFixed(1)} s`);
        tick();
        timer = setInterval(tick, 200);
      });
      clearInterval(timer);
      if (!response.ok) return showError(await apiError(response), () => $("form").requestSubmit());
      const text = await response.blob.text();
      const result = JSON.parse(text);
      state.result = result;
      renderResult(result, text);
      setStatus("working", "Drawing the film and its masks…");
      await loadViews(result, files);
      setStatus("done", `Done in ${((performance.now() - started) / 1000).toFixed(1)} s: ${result.label}, score ${result.score}.`);
    } catch (err) {
      clearInterval(timer);
      if (err.api) showError(err.api, () => $("form").requestSubmit());
      else setStatus("error", "The request did not complete:", String(err.message || err));
    } finally {
      busy(false);
    }
  }

  // The API's message; for a missing or refused key also the key field, and `retry` once a key is given.
  function showError(error, retry) {
    setStatus("error", error.summary, error.message);
    if (error.needsKey) SpineKey.ask(retry);
  }

  function busy(on) {
    $("analyze").disabled = on;
    $("form").setAttribute("aria-busy", String(on));
    $("progress").hidden = !on;
    if (on) $("progress").value = 0;
  }

  function reset() {
    state.urls.forEach((url) => URL.revokeObjectURL(url));
    Object.assign(state, { views: {}, current: null, result: null, urls: [] });
    for (const id of ["label", "score", "rule", "legend", "warnings", "downloads", "view-tabs"]) $(id).replaceChildren();
    $("per-mask").tBodies[0].replaceChildren();
    $("cobb").textContent = "Not measured yet.";
    $("label").className = "label";
    film.show(null, [], [], null);
    $("stage-empty").hidden = false;
  }

  // ------------------------------------------------------------------ results panel

  function modelValidated(result, structure) {
    const score = (result.per_mask || []).find((m) => m.structure === structure && typeof m.validated === "boolean");
    if (score) return score.validated;
    const model = (result.models || []).find((m) => m.name === structure);
    return model ? model.validated : null;
  }

  const RULES = {
    measured: "measured: Damaged when the measured largest Cobb angle is at least 40° (P(Damaged) from the measurement's error)",
    mean: "mean: the mean probability of Damaged over the deciding masks, against the threshold",
    max_score: "max_score: the class of the single most confident mask (the course report's rule)",
    cobb: "cobb: Damaged when the measured largest Cobb angle is at least 40°, on a reliable main curve only",
  };

  function renderResult(result, text) {
    $("label").textContent = result.label;
    $("label").className = `label ${result.label === "Damaged" ? "damaged" : "normal"}`;
    $("score").textContent = `score ${result.score} (probability of ${result.label})`;
    const rule = $("rule");
    rule.append(el("p", { text: `Decided by the rule ${RULES[result.aggregation] || result.aggregation}.` }));
    if (typeof result.p_damaged === "number") {
      const threshold = typeof result.threshold === "number" ? `, threshold ${result.threshold}` : "";
      rule.append(el("p", { text: `P(Damaged) ${result.p_damaged}${threshold}.` }));
    }
    if (Array.isArray(result.decided_by)) {
      // the measured and cobb rules decide by the angle read on these masks' vertebrae, not by their scores
      const byAngle = result.aggregation === "measured" || result.aggregation === "cobb";
      const what = byAngle ? "Measured on the vertebrae of" : "Masks that decided:";
      rule.append(el("p", { text: `${what} ${result.decided_by.join(", ") || "none"}.` }));
    }
    for (const ex of result.excluded || []) rule.append(el("p", { className: "muted", text: `Not counted: ${ex.structure} (${ex.reason}).` }));
    for (const [name, alt] of Object.entries(result.rules || {})) {
      if (name === result.aggregation || !alt) continue;
      const p = typeof alt.p_damaged === "number" ? `, P(Damaged) ${alt.p_damaged}` : "";
      rule.append(el("p", { className: "muted", text: `The ${name} rule would say ${alt.label ?? "—"}${p}.` }));
    }
    renderLegend(result);
    renderScores(result);
    renderCobb(result);
    renderWarnings(result);
    renderDownloads(result, text);
  }

  function renderLegend(result) {
    const legend = $("legend");
    for (const view of result.views) {
      for (const mask of view.masks) {
        const id = `toggle-${view.view}-${mask.structure}`;
        const validated = modelValidated(result, mask.structure);
        // Demonstration masks start hidden (the API does not let them decide either); one click shows them.
        const box = el("input", { type: "checkbox", id, checked: validated !== false });
        box.addEventListener("change", () => {
          const layer = (state.views[view.view]?.masks || []).find((m) => m.structure === mask.structure);
          if (layer) layer.visible = box.checked;
          film.draw();
        });
        legend.append(el("li", { "data-structure": mask.structure, "data-view": view.view },
          box,
          el("label", { for: id },
            el("span", { className: "swatch", style: `background:${hex(colourOf(mask.structure))}` }),
            el("span", { className: "name", text: mask.structure }),
            el("span", { className: "muted", text: ` ${view.view}` }),
            validated === false ? el("span", { className: "badge demo", text: "demonstration model" }) : null,
            mask.area_px === 0 ? el("span", { className: "badge", text: "empty" }) : null)));
      }
    }
    if (!legend.children.length) legend.append(el("li", { className: "muted", text: "No masks returned." }));
  }

  function renderScores(result) {
    const body = $("per-mask").tBodies[0];
    // The "Decides" column only when the service says which masks entered the label.
    $("per-mask").classList.toggle("no-decides", !(result.per_mask || []).some((m) => typeof m.decides === "boolean"));
    for (const m of result.per_mask || []) {
      const validated = typeof m.validated === "boolean" ? m.validated : modelValidated(result, m.structure);
      const decides = typeof m.decides === "boolean" ? (m.decides ? "yes" : "no") : "—";
      body.append(el("tr", { "data-structure": m.structure },
        el("td", { text: m.structure }), el("td", { text: m.view }),
        el("td", { className: "num", text: String(m.p_damaged) }),
        el("td", {}, validated === false ? el("span", { className: "badge demo", text: "demo" }) : el("span", { text: validated ? "validated" : "—" })),
        el("td", { className: "decides", text: decides })));
    }
  }

  // Numbers are shown as the API gives them (its rounding), never re-rounded here.
  const CURVE_NAMES = { proximal_thoracic: "proximal thoracic", main_thoracic: "main thoracic", thoracolumbar_lumbar: "thoracolumbar / lumbar" };
  const curveName = (name) => CURVE_NAMES[name] || String(name).replaceAll("_", " ");

  function renderCobb(result) {
    const box = $("cobb");
    if (!("cobb" in result)) { box.textContent = "This version of the service does not measure Cobb angles."; return; }
    if (!result.cobb) { box.textContent = "No Cobb angle for this request (measured on an AP film only)."; return; }
    const c = result.cobb;
    box.replaceChildren(el("p", { className: "cobb-max", text: `Largest Cobb angle ${c.max_deg}°: ${c.curve}-curve, ${c.severity}.` }));
    const list = el("ul");
    for (const curve of c.curves || []) {
      const unsure = curve.reliable === false ? ` (end vertebrae uncertain, confidence ${curve.end_confidence})` : "";
      list.append(el("li", { text: `${curveName(curve.name)}: ${curve.angle_deg}° between ${curve.upper_end} and ${curve.lower_end}, apex ${curve.apex}${unsure}` }));
    }
    box.append(list);
    if (Array.isArray(result.vertebrae)) box.append(el("p", { className: "muted", text: `${result.vertebrae.length} vertebrae located; end plates drawn on the film.` }));
  }

  function renderWarnings(result) {
    const list = $("warnings");
    const demo = (result.per_mask || []).filter((m) => modelValidated(result, m.structure) === false);
    if (demo.length) {
      list.append(el("li", { className: "demo", text: `${demo.length} of the ${result.per_mask.length} masks come from demonstration models (trained on a single study): look at them to try the API, do not read them clinically.` }));
    }
    const warnings = [...new Set(result.warnings || [])]; // each once, even when two views say the same
    const apiSaysCpu = warnings.some((w) => w.includes("CPUExecutionProvider"));
    if (result.execution_provider === "CPUExecutionProvider" && !apiSaysCpu) {
      list.append(el("li", { text: "Computed on the CPU (no GPU in use here): the same results, only slower." }));
    }
    for (const w of warnings) list.append(el("li", { text: w }));
    if (!list.children.length) list.append(el("li", { className: "muted", text: "None." }));
  }

  function renderDownloads(result, text) {
    const box = $("downloads");
    box.append(downloadLink("Result (JSON)", blobUrl(new Blob([text], { type: "application/json" })), "spine-xray-result.json"));
    for (const view of result.views) {
      for (const mask of view.masks) {
        if (mask.encoding !== "png") continue;
        box.append(downloadLink(`${view.view} ${mask.structure} mask (PNG)`, `data:image/png;base64,${mask.data}`, `${view.view}_${mask.structure}.png`));
      }
    }
    const seg = state.paths["/dicom/seg"];
    if (seg && seg.post) { // only when the running service offers it (GET /openapi.json)
      for (const view of result.views) {
        const button = el("button", { type: "button", className: "button", text: `${view.view} DICOM SEG` });
        if (view.format === "DICOM") {
          button.addEventListener("click", () => downloadSeg(seg.post, view.view, button));
          box.append(button);
          continue;
        }
        // A SEG references its source DICOM instance (study, series, SOP instance): a PNG/JPEG/TIFF film has none.
        const reason = `A DICOM SEG needs a DICOM film; this ${view.view} film is ${view.format || "not DICOM"}.`;
        const note = el("span", { id: `seg-reason-${view.view}`, className: "muted seg-reason", text: reason });
        Object.assign(button, { disabled: true, title: reason });
        button.setAttribute("aria-describedby", note.id);
        box.append(button, note);
      }
    }
  }

  // The multipart form of POST /dicom/seg, read from the OpenAPI document: the film goes in the view's field
  // (`ap`/`lat`) when there is one, else in the first file field.
  function segFields(operation) {
    const content = operation.requestBody?.content?.["multipart/form-data"];
    let schema = content?.schema || {};
    if (schema.$ref) schema = schema.$ref.split("/").slice(1).reduce((node, key) => node?.[key], state.openapi) || {};
    const props = schema.properties || {};
    const isFile = (p) => p && (p.format === "binary" || p.contentMediaType || (p.anyOf || []).some(isFile));
    return { names: Object.keys(props), files: Object.keys(props).filter((k) => isFile(props[k])) };
  }

  async function downloadSeg(operation, view, button) {
    const file = FILE_INPUTS[view].files[0];
    const fields = segFields(operation);
    const form = new FormData();
    const field = fields.files.includes(view.toLowerCase()) ? view.toLowerCase() : fields.files[0] || "file";
    form.append(field, file);
    if (fields.names.includes("view")) form.append("view", view);
    button.disabled = true;
    setStatus("working", `Building the ${view} DICOM SEG…`);
    try {
      const response = await post("/dicom/seg", form);
      if (!response.ok) return showError(await apiError(response), () => downloadSeg(operation, view, button));
      const link = downloadLink("", blobUrl(response.blob), `${view}_seg.dcm`);
      document.body.append(link);
      link.click();
      link.remove();
      setStatus("done", `${view} DICOM SEG downloaded.`);
    } catch (err) {
      setStatus("error", "The DICOM SEG request failed:", String(err.message || err));
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ film

  // The browser draws PNG and JPEG itself; DICOM and TIFF (which it cannot draw), or a file it decodes at another
  // size than the service did, are decoded by the service (POST /viewer/preview: the pixels it segmented).
  async function decodeFilm(file, view) {
    try {
      const bitmap = await createImageBitmap(file);
      if (bitmap.width === view.width && bitmap.height === view.height) return { bitmap, source: "decoded by the browser" };
      bitmap.close();
    } catch { /* not a format the browser draws */ }
    const form = new FormData();
    form.append("file", file);
    const response = await post("/viewer/preview", form);
    if (!response.ok) throw Object.assign(new Error("preview failed"), { api: await apiError(response) });
    return { bitmap: await createImageBitmap(response.blob), source: "decoded by the service (DICOM/TIFF preview)" };
  }

  async function loadViews(result, files) {
    for (const view of result.views) {
      const { bitmap, source } = await decodeFilm(files[view.view], view);
      const masks = await Promise.all(view.masks.filter((m) => m.encoding === "png").map(async (m) => ({
        structure: m.structure,
        colour: colourOf(m.structure),
        visible: modelValidated(result, m.structure) !== false,
        bitmap: await createImageBitmap(new Blob([base64Bytes(m.data)], { type: "image/png" })),
      })));
      state.views[view.view] = { film: bitmap, masks, source, width: view.width, height: view.height };
    }
    const tabs = $("view-tabs");
    for (const name of Object.keys(state.views)) {
      const tab = el("button", { type: "button", text: name, "aria-pressed": "false" });
      tab.addEventListener("click", () => showView(name));
      tabs.append(tab);
    }
    const first = state.views.AP ? "AP" : Object.keys(state.views)[0];
    if (first) showView(first);
  }

  function showView(name) {
    const view = state.views[name];
    state.current = name;
    for (const tab of $("view-tabs").children) tab.setAttribute("aria-pressed", String(tab.textContent === name));
    // Cobb angles and vertebrae are measured on the AP film (docs: /classify `cobb`, `vertebrae`).
    const onAp = name === "AP" && state.result;
    film.show(view.film, view.masks, onAp ? state.result.vertebrae : [], onAp ? state.result.cobb : null);
    $("film").setAttribute("aria-label", `${name} film, ${view.width}×${view.height} pixels, ${view.source}, with ${view.masks.length} masks. Drag or arrow keys to pan, + and − to zoom, 0 to fit.`);
    $("stage-empty").hidden = true;
  }

  // ------------------------------------------------------------------ wiring

  function wireDropZones() {
    for (const zone of document.querySelectorAll(".drop")) {
      const input = FILE_INPUTS[zone.dataset.view];
      const note = zone.querySelector(".hint");
      const original = note.textContent;
      input.addEventListener("change", () => {
        const file = input.files[0];
        note.textContent = file ? `${(file.size / 1024).toFixed(0)} kB, ${file.type || "type unknown to the browser"}` : original;
      });
      zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("over"));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        zone.classList.remove("over");
        if (!e.dataTransfer.files.length) return;
        const list = new DataTransfer();
        list.items.add(e.dataTransfer.files[0]);
        input.files = list.files;
        input.dispatchEvent(new Event("change"));
      });
    }
  }

  async function loadOpenApi() {
    try {
      const response = await fetch("/openapi.json", { headers: SpineKey.headers() });
      if (response.ok) {
        state.openapi = await response.json();
        state.paths = state.openapi.paths || {};
      }
    } catch { /* no optional features then */ }
  }

  $("form").addEventListener("submit", analyse);
  $("zoom-in").addEventListener("click", () => film.zoomAt(1.25));
  $("zoom-out").addEventListener("click", () => film.zoomAt(0.8));
  $("zoom-fit").addEventListener("click", () => film.fit());
  $("opacity").addEventListener("input", (e) => { film.opacity = e.target.value / 100; film.draw(); });
  $("mode").addEventListener("change", (e) => { film.mode = e.target.value; film.draw(); });
  $("show-cobb").addEventListener("change", (e) => { film.showCobb = e.target.checked; film.draw(); });
  wireDropZones();
  // annotate.js (Edit masks) shows a film through the same path, and reports errors the same way.
  window.spineViewer = { state, film, ready: loadOpenApi(), showView, decodeFilm, apiError, post, setStatus, showError, el, FILE_INPUTS };
})();
