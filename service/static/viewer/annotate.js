// Edit masks: brush, eraser, polygon fill, undo/redo on one structure's mask at the film's full resolution,
// starting from the model's mask or from empty, then POST /annotations (film + one PNG per edited structure).
// Plain browser JavaScript. The pixel rule is in mask_paint.js (tests/browser replay it exactly).
"use strict";

(function () {
  const V = window.spineViewer;
  const { colourOf } = window.SpineFilm;
  const { stamp, fillPolygon, grow, emptyBox } = window.SpineMaskPaint;
  const { SpineKey } = window;
  const $ = (id) => document.getElementById(id);
  const film = V.film;
  const STRUCTURES = {
    AP: ["Ap_Vertebra", "Ap_Pedicle", "Ap_Spinous_Process"],
    LAT: ["Lat_Vertebra", "Lat_Anterior_Vertebral_Line", "Lat_Disk_Height", "Lat_Posterior_Vertebral_Line", "Lat_Spinous_Process"],
  };
  const CLOSE_PX = 8; // a polygon click this close (CSS pixels) to its first point closes it
  const ed = { active: false, tool: "brush", edits: {}, current: null, polygon: [], hover: null, stroke: null, space: false, studyId: null };

  // ------------------------------------------------------------------ one structure's mask being edited

  class MaskEdit {
    constructor(view, structure, w, h, start, source) {
      Object.assign(this, { view, structure, w, h, source, history: [], redo: [] });
      this.bits = start;
      this.start = start.slice();
      this.layer = document.createElement("canvas");
      this.layer.width = w; this.layer.height = h;
      this.ctx = this.layer.getContext("2d");
      this.image = this.ctx.createImageData(w, h);
      this.colour = colourOf(structure);
      this.refresh({ x0: 0, y0: 0, x1: w - 1, y1: h - 1 });
    }

    refresh(box) {
      if (box.x1 < box.x0) return;
      const { w, bits, colour } = this, px = this.image.data;
      for (let y = box.y0; y <= box.y1; y++) {
        for (let x = box.x0, i = y * w + box.x0; x <= box.x1; x++, i++) {
          const o = 4 * i;
          px[o] = colour[0]; px[o + 1] = colour[1]; px[o + 2] = colour[2]; px[o + 3] = bits[i] ? 255 : 0;
        }
      }
      this.ctx.putImageData(this.image, 0, 0, box.x0, box.y0, box.x1 - box.x0 + 1, box.y1 - box.y0 + 1);
    }

    cut(bits, box) {
      const out = new Uint8Array((box.x1 - box.x0 + 1) * (box.y1 - box.y0 + 1));
      let k = 0;
      for (let y = box.y0; y <= box.y1; y++) for (let x = box.x0; x <= box.x1; x++) out[k++] = bits[y * this.w + x];
      return out;
    }

    paste(patch, box) {
      let k = 0;
      for (let y = box.y0; y <= box.y1; y++) for (let x = box.x0; x <= box.x1; x++) this.bits[y * this.w + x] = patch[k++];
      this.refresh(box);
    }

    // An operation done: its box's pixels before and after, for undo and redo.
    commit(op, before, box) {
      if (box.x1 >= box.x0) {
        op.box = box;
        op.before = this.cut(before, box);
        op.after = this.cut(this.bits, box);
      }
      this.history.push(op);
      this.redo = [];
    }

    undo() {
      const op = this.history.pop();
      if (!op) return false;
      if (op.box) this.paste(op.before, op.box);
      this.redo.push(op);
      return true;
    }

    redoOne() {
      const op = this.redo.pop();
      if (!op) return false;
      if (op.box) this.paste(op.after, op.box);
      this.history.push(op);
      return true;
    }

    editedPixels() {
      let n = 0;
      for (let i = 0; i < this.bits.length; i++) n += this.bits[i] !== this.start[i];
      return n;
    }

    async png() {
      const canvas = document.createElement("canvas");
      canvas.width = this.w; canvas.height = this.h;
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(this.w, this.h);
      for (let i = 0; i < this.bits.length; i++) {
        const v = this.bits[i] ? 255 : 0;
        image.data[4 * i] = v; image.data[4 * i + 1] = v; image.data[4 * i + 2] = v; image.data[4 * i + 3] = 255;
      }
      ctx.putImageData(image, 0, 0);
      return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    }
  }

  // ------------------------------------------------------------------ the editor film.js talks to

  const editor = {
    get structure() { return ed.current ? ed.current.structure : null; },
    get layer() { return ed.current.layer; },
    takes(e) { return e.button === 0 && !ed.space && ed.current !== null; },
    down(p, e) {
      const m = ed.current;
      if (ed.tool === "polygon") return polygonClick(p, e);
      const r = Number($("brush-size").value) / 2;
      ed.stroke = { op: { kind: "stroke", value: ed.tool === "eraser" ? 0 : 1, r, stamps: [[p.x, p.y]] }, before: m.bits.slice(), box: emptyBox(), last: p };
      stamp(m.bits, m.w, m.h, p.x, p.y, r, ed.stroke.op.value, ed.stroke.box);
      m.refresh(ed.stroke.box);
      film.draw();
    },
    move(p) {
      ed.hover = p;
      const s = ed.stroke;
      if (s) {
        const m = ed.current, { r, value } = s.op;
        const dist = Math.hypot(p.x - s.last.x, p.y - s.last.y), step = Math.max(0.5, r / 2);
        const n = Math.ceil(dist / step), box = emptyBox();
        for (let i = 1; i <= n; i++) {
          const x = s.last.x + (p.x - s.last.x) * i / n, y = s.last.y + (p.y - s.last.y) * i / n;
          s.op.stamps.push([x, y]);
          stamp(m.bits, m.w, m.h, x, y, r, value, box);
        }
        if (n) { s.last = p; m.refresh(box); grow(s.box, box.x0, box.y0, box.x1, box.y1); }
      }
      film.draw();
    },
    up() {
      const s = ed.stroke;
      if (!s) return;
      ed.stroke = null;
      ed.current.commit(s.op, s.before, s.box);
      changed();
    },
    dblclick() { if (ed.tool === "polygon") closePolygon(); },
    drawOverlay(ctx, scale) {
      ctx.lineWidth = 1.5 / scale;
      if (ed.polygon.length) {
        ctx.strokeStyle = "#ffffff";
        ctx.beginPath();
        ed.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        if (ed.hover) ctx.lineTo(ed.hover.x, ed.hover.y);
        ctx.stroke();
        for (const [x, y] of ed.polygon) ctx.fillRect(x - 2 / scale, y - 2 / scale, 4 / scale, 4 / scale);
      } else if (ed.hover && ed.tool !== "polygon") { // the brush's footprint under the pointer
        ctx.strokeStyle = ed.tool === "eraser" ? "#ffffff" : "#ffd400";
        ctx.beginPath();
        ctx.arc(ed.hover.x, ed.hover.y, Number($("brush-size").value) / 2, 0, 2 * Math.PI);
        ctx.stroke();
      }
    },
  };

  function polygonClick(p) {
    const last = ed.polygon[ed.polygon.length - 1];
    const near = (q) => Math.hypot((q[0] - p.x) * film.scale, (q[1] - p.y) * film.scale) <= CLOSE_PX;
    if (ed.polygon.length >= 3 && near(ed.polygon[0])) return closePolygon();
    if (!last || !near(last)) ed.polygon.push([p.x, p.y]); // a double-click's second press adds nothing
    film.draw();
  }

  function closePolygon() {
    const m = ed.current, pts = ed.polygon;
    ed.polygon = [];
    if (!m || pts.length < 3) return film.draw();
    const before = m.bits.slice(), box = emptyBox();
    fillPolygon(m.bits, m.w, m.h, pts, 1, box);
    m.refresh(box);
    m.commit({ kind: "polygon", value: 1, points: pts }, before, box);
    changed();
  }

  function changed() {
    const m = ed.current;
    $("undo").disabled = !m || !m.history.length;
    $("redo").disabled = !m || !m.redo.length;
    if (m) $("edit-info").textContent = `${m.structure}: ${m.editedPixels()} pixels changed from ${m.source.source === "model" ? "the model's mask" : "empty"}`;
    film.draw();
  }

  function setTool(tool) {
    ed.tool = tool;
    ed.polygon = [];
    for (const name of ["brush", "eraser", "polygon"]) $(name).setAttribute("aria-pressed", String(name === tool));
    film.draw();
  }

  // ------------------------------------------------------------------ opening a structure

  function status(kind, text, detail) {
    const box = $("annotation-status");
    box.dataset.state = kind;
    box.replaceChildren(V.el("span", { text }));
    if (detail) box.append(V.el("span", { className: "api-message", text: ` ${detail}` }));
  }

  function bitsOf(bitmap, w, h) {
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const px = ctx.getImageData(0, 0, w, h).data, bits = new Uint8Array(w * h);
    for (let i = 0; i < bits.length; i++) bits[i] = px[4 * i] > 127 ? 1 : 0;
    return bits;
  }

  function modelRef(models, structure) {
    const m = (models || []).find((x) => x.name === structure);
    return m ? { source: "model", model: m.name, model_version: m.version, model_sha256: m.sha256, validated: m.validated } : { source: "model" };
  }

  // The model's mask: the one /classify returned, else POST /segment for this structure (demonstration ones too).
  async function modelMask(view, structure) {
    const shown = (V.state.views[view].masks || []).find((m) => m.structure === structure);
    if (shown) return { bitmap: shown.bitmap, source: modelRef(V.state.result && V.state.result.models, structure) };
    const form = new FormData();
    form.append("file", V.FILE_INPUTS[view].files[0]);
    form.append("view", view);
    form.append("structures", structure);
    form.append("mask_format", "png");
    const response = await V.post("/segment", form);
    if (!response.ok) throw Object.assign(new Error("segment failed"), { api: await V.apiError(response) });
    const body = JSON.parse(await response.blob.text());
    const mask = body.masks.find((m) => m.structure === structure);
    const bytes = Uint8Array.from(atob(mask.data), (c) => c.charCodeAt(0));
    return { bitmap: await createImageBitmap(new Blob([bytes], { type: "image/png" })), source: modelRef(body.models, structure) };
  }

  async function openStructure() {
    const view = V.state.current, structure = $("edit-structure").value;
    if (!view || !structure) return;
    const key = `${view}/${structure}`;
    if (!ed.edits[key]) {
      const { width: w, height: h } = V.state.views[view];
      let start = new Uint8Array(w * h), source = { source: "empty" };
      if ($("edit-start").value === "model") {
        status("working", `Asking the ${structure} model for its mask…`);
        try {
          const got = await modelMask(view, structure);
          start = bitsOf(got.bitmap, w, h);
          source = got.source;
        } catch (err) {
          status("error", `No model mask for ${structure}; starting from empty.`, err.api ? err.api.message : String(err.message || err));
        }
      }
      ed.edits[key] = new MaskEdit(view, structure, w, h, start, source);
      if (!$("annotation-status").dataset.state || $("annotation-status").dataset.state === "working") status("idle", "");
    }
    ed.current = ed.edits[key];
    ed.polygon = [];
    changed();
  }

  // A film chosen but not analysed (or refused: a LAT-only study gets no /classify answer) opens without masks.
  async function ensureFilm() {
    if (V.state.current) return true;
    const view = V.FILE_INPUTS.AP.files[0] ? "AP" : V.FILE_INPUTS.LAT.files[0] ? "LAT" : null;
    if (!view) {
      status("error", "Choose an AP or a lateral film first.");
      return false;
    }
    const file = V.FILE_INPUTS[view].files[0];
    let bitmap;
    try { bitmap = await createImageBitmap(file); } catch { bitmap = (await V.decodeFilm(file, { width: -1, height: -1 })).bitmap; }
    V.state.views[view] = { film: bitmap, masks: [], source: "decoded for editing", width: bitmap.width, height: bitmap.height };
    V.showView(view);
    return true;
  }

  function fillStructures() {
    const view = V.state.current, select = $("edit-structure"), keep = select.value;
    select.replaceChildren(...(STRUCTURES[view] || []).map((s) => V.el("option", { value: s, text: s })));
    if ((STRUCTURES[view] || []).includes(keep)) select.value = keep;
  }

  async function toggle() {
    if (ed.active) {
      ed.active = false;
      film.editor = null;
      ed.current = null;
    } else {
      try {
        if (!(await ensureFilm())) return;
      } catch (err) {
        return status("error", "The film could not be opened for editing:", err.api ? err.api.message : String(err.message || err));
      }
      ed.active = true;
      film.editor = editor;
      fillStructures();
      await openStructure();
    }
    $("edit-masks").setAttribute("aria-pressed", String(ed.active));
    $("edit-bar").hidden = $("save-bar").hidden = !ed.active;
    film.draw();
  }

  // ------------------------------------------------------------------ save

  async function save() {
    const view = V.state.current, file = V.FILE_INPUTS[view] && V.FILE_INPUTS[view].files[0];
    const edits = Object.values(ed.edits).filter((m) => m.view === view);
    const cls = $("study-class").value, annotator = $("annotator").value.trim();
    if (!cls) return status("error", "Choose the study's class (Normal or Damaged) first.");
    if (!annotator) return status("error", "Say who annotated (the Annotator field).");
    if (!file || !edits.length) return status("error", "Nothing to save: open a film and edit a structure first.");
    const form = new FormData();
    form.append("film", file);
    const provenance = {};
    for (const m of edits) {
      form.append("masks", await m.png(), `${m.structure}.png`);
      const edited = m.editedPixels();
      provenance[m.structure] = { pre_annotation: m.source, edited_pixels: edited, edited_share: edited / (m.w * m.h) };
    }
    form.append("view", view);
    form.append("study_class", cls);
    form.append("annotator", annotator);
    const id = $("study-id").value.trim();
    if (id) form.append("study_id", id);
    form.append("provenance", JSON.stringify(provenance));
    $("save-annotation").disabled = true;
    status("working", "Saving…");
    try {
      const response = await V.post("/annotations", form);
      if (!response.ok) {
        const error = await V.apiError(response);
        status("error", error.summary, error.message);
        if (error.needsKey) SpineKey.ask(save);
        return;
      }
      const body = JSON.parse(await response.blob.text());
      $("study-id").value = body.study_id;
      status("done", `Saved ${view} with ${edits.map((m) => m.structure).join(", ")} as ${body.class}, study ${body.study_id}`);
    } catch (err) {
      status("error", "The annotation was not saved:", String(err.message || err));
    } finally {
      $("save-annotation").disabled = false;
    }
  }

  // ------------------------------------------------------------------ wiring

  function onKey(e) {
    if (!ed.active) return;
    if (e.key === " " && e.target === $("film")) { ed.space = e.type === "keydown"; e.preventDefault(); return; }
    if (e.type !== "keydown" || ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
    const k = e.key.toLowerCase(), ctrl = e.ctrlKey || e.metaKey;
    if (ctrl && (k === "y" || (k === "z" && e.shiftKey))) $("redo").click();
    else if (ctrl && k === "z") $("undo").click();
    else if (ctrl) return;
    else if (k === "b") setTool("brush");
    else if (k === "e") setTool("eraser");
    else if (k === "p") setTool("polygon");
    else if (k === "[" || k === "]") {
      const size = $("brush-size");
      size.value = String(Number(size.value) + (k === "]" ? 2 : -2));
      size.dispatchEvent(new Event("input"));
    } else if (k === "enter") closePolygon();
    else if (k === "escape") { ed.polygon = []; film.draw(); }
    else return;
    e.preventDefault();
  }

  const show = film.show.bind(film);
  film.show = (...args) => { // a view tab while editing: the structures of that view
    show(...args);
    if (ed.active && V.state.current && (!ed.current || ed.current.view !== V.state.current)) {
      fillStructures();
      openStructure();
    }
  };

  $("edit-masks").addEventListener("click", toggle);
  $("edit-structure").addEventListener("change", openStructure);
  $("edit-start").addEventListener("change", () => { // an untouched mask restarts from the other source
    const m = ed.current;
    if (m && !m.history.length) {
      delete ed.edits[`${m.view}/${m.structure}`];
      openStructure();
    }
  });
  for (const tool of ["brush", "eraser", "polygon"]) $(tool).addEventListener("click", () => setTool(tool));
  $("undo").addEventListener("click", () => { if (ed.current && ed.current.undo()) changed(); });
  $("redo").addEventListener("click", () => { if (ed.current && ed.current.redoOne()) changed(); });
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = `${$("brush-size").value} px`; film.draw(); });
  $("save-annotation").addEventListener("click", save);
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", onKey);

  // For tests and scripts: the operations in force (undone ones left out), to replay the pixel rule exactly.
  window.spineAnnotate = {
    ops: (view, structure) => {
      const m = ed.edits[`${view}/${structure}`];
      return m ? m.history.map(({ kind, value, r, stamps, points }) => ({ kind, value, r, stamps, points })) : null;
    },
    startPixels: (view, structure) => {
      const m = ed.edits[`${view}/${structure}`];
      return m ? m.start.reduce((n, v) => n + v, 0) : null;
    },
  };
})();
