// The pixel rule of Edit masks (annotate.js), kept apart so it stays small and exact: a brush stamp takes the pixels
// whose centres (x + 0.5, y + 0.5) lie within its radius, a polygon the pixels whose centres are inside it (even-odd
// scanline). tests/browser/test_annotate_page.py replays both in numpy, bit for bit.
"use strict";

(function () {
  function stamp(bits, w, h, cx, cy, r, value, box) {
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(w - 1, Math.ceil(cx + r));
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(h - 1, Math.ceil(cy + r));
    const r2 = r * r;
    for (let y = y0; y <= y1; y++) {
      const dy = y + 0.5 - cy;
      for (let x = x0; x <= x1; x++) {
        const dx = x + 0.5 - cx;
        if (dx * dx + dy * dy <= r2) bits[y * w + x] = value;
      }
    }
    grow(box, x0, y0, x1, y1);
  }

  function fillPolygon(bits, w, h, pts, value, box) {
    const ys = pts.map((p) => p[1]);
    const y0 = Math.max(0, Math.floor(Math.min(...ys))), y1 = Math.min(h - 1, Math.ceil(Math.max(...ys)));
    for (let y = y0; y <= y1; y++) {
      const yc = y + 0.5;
      const xs = [];
      for (let i = 0; i < pts.length; i++) {
        const a = pts[i], b = pts[(i + 1) % pts.length];
        if ((a[1] <= yc) !== (b[1] <= yc)) xs.push(a[0] + (yc - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
      }
      xs.sort((p, q) => p - q);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        const from = Math.max(0, Math.ceil(xs[k] - 0.5)), to = Math.min(w - 1, Math.ceil(xs[k + 1] - 0.5) - 1);
        for (let x = from; x <= to; x++) bits[y * w + x] = value;
        if (from <= to) grow(box, from, y, to, y);
      }
    }
  }

  function grow(box, x0, y0, x1, y1) {
    box.x0 = Math.min(box.x0, x0); box.y0 = Math.min(box.y0, y0);
    box.x1 = Math.max(box.x1, x1); box.y1 = Math.max(box.y1, y1);
  }

  const emptyBox = () => ({ x0: Infinity, y0: Infinity, x1: -Infinity, y1: -Infinity });

  window.SpineMaskPaint = { stamp, fillPolygon, grow, emptyBox };
})();
