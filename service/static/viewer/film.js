// The film canvas: one radiograph at full resolution, its masks as coloured layers, Cobb lines, pan and zoom.
// Plain browser JavaScript, no dependencies. Coordinates: image pixels; `scale` = CSS pixels per image pixel.
"use strict";

(function () {
  // Same colours, in the same order, as the service's overlay (service/masks.py PALETTE over
  // spine_core.structures.STRUCTURES), so a film here and a /segment overlay read alike.
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
  ];
  const STRUCTURE_ORDER = [
    "Ap_Pedicle", "Ap_Spinous_Process", "Ap_Vertebra", "Lat_Anterior_Vertebral_Line",
    "Lat_Disk_Height", "Lat_Posterior_Vertebral_Line", "Lat_Spinous_Process", "Lat_Vertebra",
  ];
  const CURVE_COLOURS = ["#00e5ff", "#ff4fd8", "#ffb000"];
  const BACKGROUND = "#101418";
  const MIN_SCALE = 0.02;
  const MAX_SCALE = 16;
  const PAN_STEP = 60;

  function colourOf(structure) {
    let index = STRUCTURE_ORDER.indexOf(structure);
    if (index < 0) { // not one of ours: a stable colour from the name
      index = 0;
      for (const ch of structure) index = (index * 31 + ch.charCodeAt(0)) >>> 0;
    }
    return PALETTE[index % PALETTE.length];
  }

  function hex([r, g, b]) {
    return "#" + [r, g, b].map((v) => v.toString(16).padStart(2, "0")).join("");
  }

  // A mask bitmap (white = structure) -> a canvas in the structure's colour: the whole mask, or its edge only.
  function buildLayer(bitmap, colour, mode) {
    const w = bitmap.width, h = bitmap.height;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const image = ctx.getImageData(0, 0, w, h);
    const px = image.data;
    const inside = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) inside[i] = px[4 * i] > 127 ? 1 : 0;
    // An outline a few image pixels wide, so it stays visible when a tall film is fitted to the screen.
    const r = Math.max(1, Math.round(Math.max(w, h) / 700));
    for (let y = 0, i = 0; y < h; y++) {
      for (let x = 0; x < w; x++, i++) {
        let on = inside[i] === 1;
        if (on && mode === "outline") {
          on = x < r || x >= w - r || y < r || y >= h - r ||
            !inside[i - r] || !inside[i + r] || !inside[i - r * w] || !inside[i + r * w];
        }
        const o = 4 * i;
        px[o] = colour[0]; px[o + 1] = colour[1]; px[o + 2] = colour[2]; px[o + 3] = on ? 255 : 0;
      }
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  }

  class FilmView {
    constructor(canvas) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
      this.film = null; // ImageBitmap at the original size
      this.masks = []; // {structure, bitmap, colour, visible, layers: {fill, outline}}
      this.vertebrae = [];
      this.cobb = null;
      this.opacity = 0.45;
      this.mode = "fill";
      this.showCobb = true;
      this.scale = 1; this.tx = 0; this.ty = 0;
      this.editor = null; // annotate.js in Edit-masks mode: takes drags (Space or the middle button still pans)
      this._bindInput();
      new ResizeObserver(() => this.draw()).observe(canvas);
    }

    show(film, masks, vertebrae, cobb) {
      this.film = film;
      this.masks = masks;
      this.vertebrae = vertebrae || [];
      this.cobb = cobb || null;
      this.fit();
    }

    fit() {
      if (!this.film) return this.draw();
      const { width: cw, height: ch } = this.canvas.getBoundingClientRect();
      this.scale = Math.min(cw / this.film.width, ch / this.film.height) * 0.96;
      this.tx = (cw - this.film.width * this.scale) / 2;
      this.ty = (ch - this.film.height * this.scale) / 2;
      this.draw();
    }

    zoomAt(factor, cx, cy) {
      const rect = this.canvas.getBoundingClientRect();
      const x = cx ?? rect.width / 2, y = cy ?? rect.height / 2;
      const next = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
      this.tx = x - (x - this.tx) * (next / this.scale);
      this.ty = y - (y - this.ty) * (next / this.scale);
      this.scale = next;
      this.draw();
    }

    pan(dx, dy) { this.tx += dx; this.ty += dy; this.draw(); }

    // A pointer position (client pixels) -> film pixel coordinates (continuous: pixel i spans [i, i + 1)).
    toImage(clientX, clientY) {
      const rect = this.canvas.getBoundingClientRect();
      return { x: (clientX - rect.left - this.tx) / this.scale, y: (clientY - rect.top - this.ty) / this.scale };
    }

    _layer(mask) {
      mask.layers = mask.layers || {};
      if (!mask.layers[this.mode]) { // built on first use; the other mode's layer is dropped (memory)
        mask.layers = { [this.mode]: buildLayer(mask.bitmap, mask.colour, this.mode) };
      }
      return mask.layers[this.mode];
    }

    draw() {
      const { canvas, ctx } = this;
      const dpr = window.devicePixelRatio || 1;
      const rect = canvas.getBoundingClientRect();
      const w = Math.max(1, Math.round(rect.width * dpr)), h = Math.max(1, Math.round(rect.height * dpr));
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = BACKGROUND;
      ctx.fillRect(0, 0, w, h);
      if (!this.film) return;
      ctx.setTransform(dpr * this.scale, 0, 0, dpr * this.scale, dpr * this.tx, dpr * this.ty);
      ctx.imageSmoothingEnabled = this.scale < 2; // individual pixels visible when zoomed in
      ctx.drawImage(this.film, 0, 0);
      ctx.globalAlpha = this.opacity;
      const edited = this.editor && this.editor.structure; // drawn by the editor instead, as it is being edited
      for (const mask of this.masks) if (mask.visible && mask.structure !== edited) ctx.drawImage(this._layer(mask), 0, 0);
      if (this.editor) ctx.drawImage(this.editor.layer, 0, 0);
      ctx.globalAlpha = 1;
      if (this.editor) this.editor.drawOverlay(ctx, this.scale);
      if (this.showCobb) this._drawCobb();
    }

    _drawCobb() {
      const { ctx } = this;
      const line = 2 / this.scale; // 2 CSS pixels whatever the zoom
      const byLevel = new Map(this.vertebrae.map((v) => [v.level, v]));
      ctx.lineWidth = line;
      ctx.strokeStyle = "rgba(255,255,255,0.8)";
      for (const v of this.vertebrae) {
        const [tl, tr, bl, br] = v.corners;
        ctx.beginPath();
        ctx.moveTo(...tl); ctx.lineTo(...tr); ctx.lineTo(...br); ctx.lineTo(...bl); ctx.closePath();
        ctx.stroke();
      }
      const curves = (this.cobb && this.cobb.curves) || [];
      curves.forEach((curve, i) => {
        const colour = CURVE_COLOURS[i % CURVE_COLOURS.length];
        const upper = byLevel.get(curve.upper_end), lower = byLevel.get(curve.lower_end);
        ctx.strokeStyle = colour;
        ctx.lineWidth = 1.5 * line;
        if (upper) this._endplate(upper.corners[0], upper.corners[1]);
        if (lower) this._endplate(lower.corners[2], lower.corners[3]);
        const apex = byLevel.get(curve.apex) || upper || lower;
        if (apex) {
          const x = Math.max(apex.corners[1][0], apex.corners[3][0]) + 12 / this.scale;
          const y = (apex.corners[1][1] + apex.corners[3][1]) / 2;
          ctx.font = `${14 / this.scale}px system-ui, sans-serif`;
          ctx.fillStyle = colour;
          const text = `${curve.angle_deg.toFixed(1)}° (${curve.upper_end}–${curve.lower_end})`;
          ctx.lineWidth = 3 / this.scale;
          ctx.strokeStyle = "rgba(0,0,0,0.8)";
          ctx.strokeText(text, x, y);
          ctx.fillText(text, x, y);
        }
      });
    }

    // An endplate line extended beyond the vertebra on both sides, as drawn for a Cobb measurement.
    _endplate(a, b) {
      const dx = b[0] - a[0], dy = b[1] - a[1];
      const ctx = this.ctx;
      ctx.beginPath();
      ctx.moveTo(a[0] - 0.6 * dx, a[1] - 0.6 * dy);
      ctx.lineTo(b[0] + 0.6 * dx, b[1] + 0.6 * dy);
      ctx.stroke();
    }

    _bindInput() {
      const c = this.canvas;
      // One pointer drags the film; two (a tablet pinch) zoom about their midpoint and drag it.
      const pointers = new Map();
      const centre = () => {
        const [a, b] = [...pointers.values()];
        const rect = c.getBoundingClientRect();
        return { x: (a.x + b.x) / 2 - rect.left, y: (a.y + b.y) / 2 - rect.top, d: Math.hypot(a.x - b.x, a.y - b.y) };
      };
      const editing = new Set(); // pointers the editor owns (a brush stroke, a polygon click)
      c.addEventListener("pointerdown", (e) => {
        if (this.editor && pointers.size === 0 && this.editor.takes(e)) {
          editing.add(e.pointerId);
          try { c.setPointerCapture(e.pointerId); } catch { /* a synthetic pointer */ }
          c.focus();
          return this.editor.down(this.toImage(e.clientX, e.clientY), e);
        }
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        try { c.setPointerCapture(e.pointerId); } catch { /* a synthetic pointer: nothing to capture */ }
        c.focus();
      });
      c.addEventListener("pointermove", (e) => {
        if (this.editor && (editing.has(e.pointerId) || !pointers.size)) return this.editor.move(this.toImage(e.clientX, e.clientY), e);
        const last = pointers.get(e.pointerId);
        if (!last) return;
        if (pointers.size === 1) {
          pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
          return this.pan(e.clientX - last.x, e.clientY - last.y);
        }
        const before = centre();
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        const after = centre();
        this.tx += after.x - before.x;
        this.ty += after.y - before.y;
        this.zoomAt(before.d > 0 ? after.d / before.d : 1, after.x, after.y);
      });
      const end = (e) => {
        if (editing.delete(e.pointerId) && this.editor) this.editor.up();
        pointers.delete(e.pointerId);
      };
      c.addEventListener("dblclick", (e) => { if (this.editor) this.editor.dblclick(e); });
      c.addEventListener("pointerup", end);
      c.addEventListener("pointercancel", end);
      c.addEventListener("wheel", (e) => {
        e.preventDefault();
        const rect = c.getBoundingClientRect();
        this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
      }, { passive: false });
      c.addEventListener("keydown", (e) => {
        const moves = { ArrowLeft: [PAN_STEP, 0], ArrowRight: [-PAN_STEP, 0], ArrowUp: [0, PAN_STEP], ArrowDown: [0, -PAN_STEP] };
        if (moves[e.key]) this.pan(...moves[e.key]);
        else if (e.key === "+" || e.key === "=") this.zoomAt(1.25);
        else if (e.key === "-" || e.key === "_") this.zoomAt(0.8);
        else if (e.key === "0") this.fit();
        else return;
        e.preventDefault();
      });
    }
  }

  window.SpineFilm = { FilmView, colourOf, hex, buildLayer };
})();
