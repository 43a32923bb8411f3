// cascade backtest report: decodes the run's arrays and draws them with Lightweight Charts.
// Inlined into every report.html by backtests/report/html.py; the library itself is loaded from
// the results folder's _assets/ (see the <script src> above this one).
(async function () {
  "use strict";
  const errorBox = document.getElementById("error");
  const fail = (msg) => { errorBox.textContent = msg; };
  const LC = window.LightweightCharts;
  if (!LC) {
    fail("The chart library did not load: it is expected at " + document.scripts[0].getAttribute("src") +
         " (the _assets folder beside the run folders). Copy it there or re-run the backtest.");
    return;
  }
  const meta = JSON.parse(document.getElementById("cascade-meta").textContent);
  if (typeof DecompressionStream === "undefined") { fail("This browser cannot decompress the report data."); return; }
  const b64 = document.getElementById("cascade-data").textContent.trim();
  const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const buf = await new Response(new Blob([raw]).stream().pipeThrough(new DecompressionStream("deflate"))).arrayBuffer();

  function arr(name) {
    const h = meta.arrays[name];
    if (!h) return null;
    if (h.type === "f32") return new Float32Array(buf, h.offset, h.n);
    if (h.type === "u8") return new Uint8Array(buf, h.offset, h.n);
    // i32p: int32 stored as four byte planes; optionally delta-encoded; NaN where <name>_missing
    const b = new Uint8Array(buf, h.offset, 4 * h.n), m = h.n, out = new Float64Array(h.n);
    const miss = h.missing ? arr(name + "_missing") : null;
    let acc = 0;
    for (let i = 0; i < m; i++) {
      const v = (b[i] | (b[m + i] << 8) | (b[2 * m + i] << 16) | (b[3 * m + i] << 24));
      acc = h.delta ? acc + v : v;
      out[i] = acc * h.scale;
    }
    if (miss) for (let i = 0; i < m; i++) if (miss[i]) out[i] = NaN;
    return out;
  }
  function candlesFrom(prefix) {  // gap from the previous close, body, upper and lower wick
    const g = arr(prefix + "_gap"), bd = arr(prefix + "_body"), up = arr(prefix + "_upper"), lw = arr(prefix + "_lower");
    const k = g.length, o = new Float64Array(k), h = new Float64Array(k), l = new Float64Array(k), c = new Float64Array(k);
    const sc = meta.arrays[prefix + "_gap"].scale, r = (x) => Math.round(x / sc);  // integer ticks: exact sums
    let prev = 0;
    for (let i = 0; i < k; i++) {
      const oi = prev + r(g[i]), ci = oi + r(bd[i]);
      o[i] = oi * sc; c[i] = ci * sc; h[i] = (Math.max(oi, ci) + r(up[i])) * sc; l[i] = (Math.min(oi, ci) - r(lw[i])) * sc; prev = ci;
    }
    return [o, h, l, c];
  }
  const n = meta.n, T = arr("time"), [O, H, L, C] = candlesFrom("bar");
  const EQ = arr("equity"), FUND = arr("funding_pnl"), FEES = arr("fees"), RISK = arr("risk"), TGT = arr("target");
  const prec = meta.price_precision, step = meta.step_s, trades = meta.trades;
  const pad = (x) => String(x).padStart(2, "0");
  const fmtTime = (s) => { const d = new Date(s * 1000); return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" +
    pad(d.getUTCDate()) + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); };
  const fmtN = (x, k) => (x === null || x === undefined || !isFinite(x)) ? "–" :
    x.toLocaleString("en-US", { minimumFractionDigits: k, maximumFractionDigits: k });
  const usd = (x) => x >= 1e9 ? (x / 1e9).toFixed(2) + "B" : x >= 1e6 ? (x / 1e6).toFixed(2) + "M" :
    x >= 1e3 ? (x / 1e3).toFixed(1) + "k" : x.toFixed(0);

  const base = {
    layout: { background: { color: "#ffffff" }, textColor: "#333", fontSize: 12 },
    grid: { vertLines: { color: "#f0f0f0" }, horzLines: { color: "#f0f0f0" } },
    rightPriceScale: { minimumWidth: 96, borderColor: "#ccc" },
    timeScale: { timeVisible: true, secondsVisible: false, borderColor: "#ccc", rightOffset: 3, minBarSpacing: 0.001 },
    crosshair: { mode: LC.CrosshairMode.Normal },
    localization: { timeFormatter: (t) => fmtTime(t) + " UTC" },
  };
  const priceBox = document.getElementById("price"), panelBox = document.getElementById("panels");
  const width = () => Math.max(600, document.getElementById("pricebox").clientWidth - 2);
  const priceH = Math.min(760, Math.max(380, Math.round(window.innerHeight * 0.62)));
  const panelH = Math.min(640, Math.max(360, Math.round(window.innerHeight * 0.55)));
  const chart = LC.createChart(priceBox, { ...base, width: width(), height: priceH });
  const candles = chart.addSeries(LC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    priceFormat: { type: "price", precision: prec, minMove: Math.pow(10, -prec) }, priceLineVisible: false,
  });
  const bars = new Array(n);
  for (let i = 0; i < n; i++) bars[i] = { time: T[i], open: O[i], high: H[i], low: L[i], close: C[i] };
  candles.setData(bars);

  // -- markers: entries (arrows at the fill price) and exits (dots coloured by reason) -----------
  const style = meta.exit_style, markers = [];
  for (const t of trades) {
    const long = t.side === "long";
    markers.push({ time: T[t.a], position: long ? "atPriceBottom" : "atPriceTop", price: t.entry,
                   shape: long ? "arrowUp" : "arrowDown", color: long ? "#00897b" : "#d81b60", size: 1.3 });
    const st = style[t.reason] || ["#6d4c41", t.reason];
    markers.push({ time: T[t.b], position: "atPriceMiddle", price: t.exit, shape: "circle", color: st[0], size: 0.9 });
  }
  markers.sort((a, b) => a.time - b.time);
  LC.createSeriesMarkers(candles, markers, { zOrder: "top" });

  // -- overlay primitive: heatmap + zones underneath, stop / take-profit segments on top ----------
  const heat = meta.heat;
  let heatCanvas = null;
  if (heat) {
    const cols = heat.positions.length, rows = heat.rows, HL = arr("heat_long"), HS = arr("heat_short");
    heatCanvas = document.createElement("canvas");
    heatCanvas.width = cols; heatCanvas.height = rows;
    const g = heatCanvas.getContext("2d"), img = g.createImageData(cols, rows);
    for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++) {
      const l = HL[c * rows + r] / 255, s = HS[c * rows + r] / 255, a = Math.max(l, s);
      if (a <= 0) continue;
      const k = (r * cols + c) * 4, w = l / (l + s);
      img.data[k] = Math.round(245 * w + 30 * (1 - w));
      img.data[k + 1] = Math.round(124 * w + 136 * (1 - w));
      img.data[k + 2] = Math.round(0 * w + 229 * (1 - w));
      img.data[k + 3] = Math.round(255 * 0.6 * a);  // faint cells fade out; candles stay readable
    }
    g.putImageData(img, 0, 0);
  }
  const bandArrays = {};
  for (const name of meta.bands) bandArrays[name] = [arr("zone_" + name + "_lo"), arr("zone_" + name + "_hi")];
  const zoneFill = { support: "rgba(67,160,71,0.16)", resistance: "rgba(142,36,170,0.14)", level: "rgba(96,125,139,0.15)" };
  const zoneLine = { support: "rgba(67,160,71,0.55)", resistance: "rgba(142,36,170,0.5)", level: "rgba(96,125,139,0.5)" };
  const ts = chart.timeScale();
  // logicalToCoordinate takes whole bar indices: interpolate for bar edges (i ± 0.5)
  const xOf = (logical) => {
    const i = Math.floor(logical), x = ts.logicalToCoordinate(i);
    if (x === null || i === logical) return x;
    const x2 = ts.logicalToCoordinate(i + 1);
    return x2 === null ? x : x + (logical - i) * (x2 - x);
  };
  class Overlay {
    constructor(z, draw) { this.z = z; this.drawFn = draw; this.view = { zOrder: () => z, renderer: () => ({ draw: (t) => { try { this.drawFn(t); } catch (e) { fail("drawing error: " + e); } } }) }; }
    paneViews() { return [this.view]; }
  }
  function withCtx(target, fn) {
    target.useBitmapCoordinateSpace((scope) => {
      const ctx = scope.context, hr = scope.horizontalPixelRatio, vr = scope.verticalPixelRatio;
      ctx.save(); fn(ctx, hr, vr, scope); ctx.restore();
    });
  }
  const visible = () => { const r = ts.getVisibleLogicalRange(); return r ? [Math.floor(r.from) - 1, Math.ceil(r.to) + 1] : [0, n]; };
  const under = new Overlay("bottom", (target) => withCtx(target, (ctx, hr, vr) => {
    const [v0, v1] = visible();
    if (heatCanvas && showHeat) {
      ctx.imageSmoothingEnabled = false;
      const p = heat.positions, yTop = candles.priceToCoordinate(heat.hi), yBot = candles.priceToCoordinate(heat.lo);
      if (yTop !== null && yBot !== null) for (let c = 0; c < p.length; c++) {
        const a = p[c] + 0.5, b = c + 1 < p.length ? p[c + 1] + 0.5 : n - 0.5;
        if (b < v0 || a > v1) continue;
        const x0 = xOf(a), x1 = xOf(b);
        if (x0 === null || x1 === null) continue;
        const px0 = Math.floor(x0 * hr), px1 = Math.ceil(x1 * hr);  // abutting columns, no hairline gaps
        ctx.drawImage(heatCanvas, c, 0, 1, heat.rows, px0, yTop * vr, Math.max(1, px1 - px0), (yBot - yTop) * vr);
      }
    }
    if (showZones && meta.bands.length) {
      // per-bar bands; zoomed out, one bar in `stride` is drawn (each over its stride) to stay fast
      const a0 = Math.max(0, v0), a1 = Math.min(n - 1, v1);
      const xa = xOf(a0), xb = xOf(a1);
      const stride = (xa === null || xb === null) ? 1 : Math.max(1, Math.floor((a1 - a0) / Math.max(1, (xb - xa)) * 0.5 + 0.5) || 1);
      for (const name of meta.bands) {
        const LO = bandArrays[name][0], HI = bandArrays[name][1], kind = name.startsWith("up") ? "resistance" : "support";
        ctx.fillStyle = zoneFill[kind];
        for (let i = a0 - (a0 % stride); i <= a1; i += stride) {
          if (i < 0 || !isFinite(LO[i]) || !isFinite(HI[i])) continue;
          const x0 = xOf(i - 0.5), x1 = xOf(i + stride - 0.5), y0 = candles.priceToCoordinate(HI[i]), y1 = candles.priceToCoordinate(LO[i]);
          if (x0 === null || x1 === null || y0 === null || y1 === null) continue;
          ctx.fillRect(Math.floor(x0 * hr), y0 * vr, Math.ceil((x1 - x0) * hr), Math.max(1, (y1 - y0) * vr));
        }
      }
    }
    if (showZones) for (const z of meta.zones) {
      if (z[1] < v0 || z[0] > v1) continue;
      const x0 = xOf(z[0] - 0.5), x1 = xOf(z[1] + 0.5), y0 = candles.priceToCoordinate(z[3]), y1 = candles.priceToCoordinate(z[2]);
      if (x0 === null || x1 === null || y0 === null || y1 === null) continue;
      ctx.fillStyle = zoneFill[z[4]] || zoneFill.level;
      ctx.fillRect(x0 * hr, y0 * vr, (x1 - x0) * hr, Math.max(1, (y1 - y0) * vr));
      ctx.strokeStyle = zoneLine[z[4]] || zoneLine.level; ctx.lineWidth = hr;
      ctx.strokeRect(x0 * hr, y0 * vr, (x1 - x0) * hr, Math.max(1, (y1 - y0) * vr));
    }
  }));
  const over = new Overlay("normal", (target) => withCtx(target, (ctx, hr, vr) => {
    const [v0, v1] = visible();
    ctx.lineWidth = Math.max(1, 1.5 * hr);
    for (const t of trades) {
      if (t.b < v0 || t.a > v1) continue;
      const x0 = xOf(t.a - 0.5), x1 = xOf(t.b + 0.5);
      if (x0 === null || x1 === null) continue;
      for (const [price, colour] of [[t.stop, "#e53935"], [t.tp, "#2e7d32"]]) {
        if (price === null || price === undefined) continue;
        const y = candles.priceToCoordinate(price);
        if (y === null) continue;
        ctx.strokeStyle = colour; ctx.setLineDash([4 * hr, 3 * hr]);
        ctx.beginPath(); ctx.moveTo(x0 * hr, y * vr); ctx.lineTo(x1 * hr, y * vr); ctx.stroke();
      }
      // a thin line from the entry to the exit shows which exit belongs to which entry
      const ya = candles.priceToCoordinate(t.entry), yb = candles.priceToCoordinate(t.exit);
      if (ya !== null && yb !== null) {
        ctx.setLineDash([]); ctx.strokeStyle = t.pnl >= 0 ? "rgba(46,125,50,0.55)" : "rgba(198,40,40,0.55)";
        ctx.lineWidth = hr; ctx.beginPath(); ctx.moveTo(xOf(t.a) * hr, ya * vr); ctx.lineTo(xOf(t.b) * hr, yb * vr); ctx.stroke();
      }
    }
  }));
  let showHeat = true, showZones = true;
  candles.attachPrimitive(under);
  candles.attachPrimitive(over);

  // -- legend with the heatmap's colour scale -----------------------------------------------------
  const legend = document.getElementById("legend");
  const item = (html) => { const d = document.createElement("div"); d.className = "item"; d.innerHTML = html; legend.appendChild(d); return d; };
  item("<span style='color:#00897b;font-size:15px'>▲</span> long entry <span style='color:#d81b60;font-size:15px'>▼</span> short entry");
  item(Object.entries(style).map(([, v]) => `<span style='color:${v[0]};font-size:15px'>●</span> ${v[1]}`).join(" "));
  item("<span style='border-top:2px dashed #e53935;width:22px;display:inline-block'></span> stop " +
       "<span style='border-top:2px dashed #2e7d32;width:22px;display:inline-block'></span> take profit");
  if (meta.zones.length || meta.bands.length) {
    const z = item("<label><input type='checkbox' checked> <span class='sw' style='background:" + zoneFill.support +
      ";border-color:" + zoneLine.support + "'></span> support zone <span class='sw' style='background:" + zoneFill.resistance +
      ";border-color:" + zoneLine.resistance + "'></span> resistance zone (as known then)</label>");
    z.querySelector("input").onchange = (e) => { showZones = e.target.checked; chart.applyOptions({}); };
  }
  if (heat) {
    const ticks = [0, 1 / 16, 1 / 4, 9 / 16, 1];  // sqrt colour scale: evenly spaced in sqrt(usd)
    const tickHtml = ticks.map((f) => `<span style='left:${Math.sqrt(f) * 100}%'>${usd(f * heat.top)}${f === 1 ? "+" : ""}</span>`).join("");
    const grad = (rgb) => `linear-gradient(to right, rgba(${rgb},0.1), rgba(${rgb},0.85))`;
    const rowUsd = (heat.hi - heat.lo) / heat.rows;
    const h = item(`<label><input type='checkbox' checked></label><div class='scale'>
      <div>estimated liquidations per price row (USD; row = ${fmtN(rowUsd, prec > 2 ? prec : 0)} in price)</div>
      <div style='display:flex;gap:44px'>
        <div><div class='grad' style='background:${grad("245,124,0")}'></div><div class='ticks'>${tickHtml}</div><div>longs (liquidated on a fall)</div></div>
        <div><div class='grad' style='background:${grad("30,136,229")}'></div><div class='ticks'>${tickHtml}</div><div>shorts (liquidated on a rise)</div></div>
      </div></div>`);
    h.querySelector("input").onchange = (e) => { showHeat = e.target.checked; chart.applyOptions({}); };
  }

  // -- panels: exposure + risk state, equity vs buy-and-hold, underwater, funding and fees --------
  const panels = LC.createChart(panelBox, { ...base, width: width(), height: panelH });
  const line = (pane, color, title, opts) => panels.addSeries(LC.LineSeries, { color, lineWidth: 1.5, title, priceLineVisible: false, lastValueVisible: true, ...opts }, pane);
  const pts = (f) => { const out = new Array(n); for (let i = 0; i < n; i++) { const v = f(i); out[i] = isFinite(v) ? { time: T[i], value: v } : { time: T[i] }; } return out; };
  const titles = [];
  let pane = 0;
  if (TGT) {
    const exposure = panels.addSeries(LC.BaselineSeries, { baseValue: { type: "price", price: 0 }, lineWidth: 1, lineType: LC.LineType.WithSteps,
      topLineColor: "#00897b", topFillColor1: "rgba(0,137,123,0.35)", topFillColor2: "rgba(0,137,123,0.35)",
      bottomLineColor: "#d81b60", bottomFillColor1: "rgba(216,27,96,0.35)", bottomFillColor2: "rgba(216,27,96,0.35)",
      priceLineVisible: false, title: "target" }, pane);
    exposure.setData(pts((i) => TGT[i]));
    if (RISK) {  // protection states as shaded spans behind the exposure (one rectangle per episode)
      const runs = [];
      for (let i = 0; i < n; i++) if (RISK[i] && (i === 0 || RISK[i - 1] !== RISK[i])) {
        let j = i; while (j + 1 < n && RISK[j + 1] === RISK[i]) j++; runs.push([i, j, RISK[i]]);
      }
      const rc = [null, "rgba(251,140,0,0.25)", "rgba(97,97,97,0.35)"], pts2 = panels.timeScale();
      const px = (l) => { const i = Math.floor(l), x = pts2.logicalToCoordinate(i), x2 = pts2.logicalToCoordinate(i + 1);
        return x === null ? null : (x2 === null ? x : x + (l - i) * (x2 - x)); };
      exposure.attachPrimitive(new Overlay("bottom", (target) => withCtx(target, (ctx, hr, vr, scope) => {
        for (const [a, b, code] of runs) {
          const x0 = px(a - 0.5), x1 = px(b + 0.5);
          if (x0 === null || x1 === null) continue;
          ctx.fillStyle = rc[code];
          ctx.fillRect(Math.floor(x0 * hr), 0, Math.max(1, Math.ceil((x1 - x0) * hr)), scope.bitmapSize.height);
        }
      })));
    }
    titles.push("target exposure (long +, short −); shaded: REDUCING orange, HALTED grey");
    pane++;
  }
  const eqSeries = line(pane, "#1e88e5", "equity");
  eqSeries.setData(pts((i) => EQ[i]));
  let c0 = NaN; for (let i = 0; i < n && !isFinite(c0); i++) c0 = O[i];
  const bh = line(pane, "#9e9e9e", "buy & hold", { lineStyle: LC.LineStyle.Dashed, lineWidth: 1 });
  bh.setData(pts((i) => meta.initial_cash * C[i] / c0));
  titles.push("equity vs buy-and-hold (USDT, marked at bar close)");
  pane++;
  let peak = meta.initial_cash;
  // filled between 0 and the drawdown line (a baseline at 0 with only its lower part coloured)
  const dd = panels.addSeries(LC.BaselineSeries, { baseValue: { type: "price", price: 0 }, lineWidth: 1,
    bottomLineColor: "#e53935", bottomFillColor1: "rgba(229,57,53,0.15)", bottomFillColor2: "rgba(229,57,53,0.45)",
    topLineColor: "#e53935", topFillColor1: "rgba(0,0,0,0)", topFillColor2: "rgba(0,0,0,0)",
    priceLineVisible: false, title: "drawdown", priceFormat: { type: "custom", formatter: (v) => v.toFixed(1) + " %" } }, pane);
  dd.setData(pts((i) => { if (isFinite(EQ[i])) peak = Math.max(peak, EQ[i]); return isFinite(EQ[i]) ? -100 * (1 - EQ[i] / peak) : NaN; }));
  titles.push("underwater: drawdown from the running peak (%)");
  pane++;
  if (FUND || FEES) {
    if (FUND) line(pane, "#8e24aa", "funding PnL").setData(pts((i) => FUND[i]));
    if (FEES) line(pane, "#fb8c00", "fees (−)").setData(pts((i) => -FEES[i]));
    titles.push("cumulative funding PnL and fees paid (USDT)");
    pane++;
  }
  const ps = panels.panes();
  const weights = TGT ? [0.7, 1.4, 0.9, 0.8] : [1.4, 0.9, 0.8];
  ps.forEach((p, i) => p.setStretchFactor(weights[i] || 1));
  function placeTitles() {
    panelBox.parentElement.querySelectorAll(".paneltitle").forEach((e) => e.remove());
    let top = 0;
    panels.panes().forEach((p, i) => {
      const d = document.createElement("div"); d.className = "paneltitle"; d.style.top = (top + 3) + "px"; d.textContent = titles[i] || "";
      panelBox.parentElement.appendChild(d); top += p.getHeight() + 1;
    });
  }
  requestAnimationFrame(placeTitles);

  // -- synchronised time axes and crosshairs -----------------------------------------------------
  let syncing = false;
  const sync = (src, dst) => src.timeScale().subscribeVisibleLogicalRangeChange((r) => {
    if (syncing || !r) return; syncing = true; dst.timeScale().setVisibleLogicalRange(r); syncing = false;
  });
  sync(chart, panels); sync(panels, chart);
  const info = document.getElementById("info");
  function tradeAt(i) {  // the trade holding bar i (trades never overlap)
    let lo = 0, hi = trades.length - 1;
    while (lo <= hi) { const m = (lo + hi) >> 1; if (trades[m].b < i) lo = m + 1; else if (trades[m].a > i) hi = m - 1; else return trades[m]; }
    return null;
  }
  function showInfo(i) {
    if (i === null || i < 0 || i >= n) { info.textContent = ""; return; }
    let s = `${fmtTime(T[i])} UTC  O ${fmtN(O[i], prec)}  H ${fmtN(H[i], prec)}  L ${fmtN(L[i], prec)}  C ${fmtN(C[i], prec)}` +
      `   equity ${fmtN(EQ[i], 2)}` + (TGT ? `  target ${fmtN(TGT[i], 2)}` : "");
    const t = tradeAt(i);
    if (t) s += `\ntrade #${t.i} ${t.side} ${t.qty} @ ${fmtN(t.entry, prec)} (${t.entry_time}) → ${fmtN(t.exit, prec)} (${t.exit_time}, ${t.reason})` +
      `  stop ${fmtN(t.stop, prec)}  pnl ${fmtN(t.pnl, 2)}  return ${fmtN(t.ret, 2)} %  R ${fmtN(t.r, 2)}`;
    info.textContent = s;
  }
  const indexOf = (time) => { let lo = 0, hi = n - 1; while (lo < hi) { const m = (lo + hi + 1) >> 1; if (T[m] <= time) lo = m; else hi = m - 1; } return lo; };
  chart.subscribeCrosshairMove((p) => {
    if (!p.time) { panels.clearCrosshairPosition(); return; }
    const i = indexOf(p.time); showInfo(i);
    if (isFinite(EQ[i])) panels.setCrosshairPosition(EQ[i], p.time, eqSeries);
  });
  panels.subscribeCrosshairMove((p) => {
    if (!p.time) { chart.clearCrosshairPosition(); return; }
    const i = indexOf(p.time); showInfo(i); chart.setCrosshairPosition(C[i], p.time, candles);
  });

  // -- windows: presets, trades, URL fragment ------------------------------------------------------
  function setWindow(a, b) {
    const r = { from: Math.max(-2, a), to: Math.min(n + 2, b) };
    chart.timeScale().setVisibleLogicalRange(r);
    panels.timeScale().setVisibleLogicalRange(r);
  }
  function span(seconds) {
    if (!seconds) { chart.timeScale().fitContent(); panels.timeScale().fitContent(); return; }
    const r = ts.getVisibleLogicalRange(), bars = seconds / step;
    const mid = r ? (r.from + r.to) / 2 : n - bars / 2;
    setWindow(Math.max(0, mid - bars / 2), Math.max(0, mid - bars / 2) + bars);
  }
  document.querySelectorAll("button[data-span]").forEach((b) => { b.onclick = () => span(+b.dataset.span); });
  let current = -1;
  function zoomTrade(k) {
    if (!trades.length) return;
    current = Math.max(0, Math.min(trades.length - 1, k));
    const t = trades[current], w = Math.max(60, (t.b - t.a) * 1.5);
    setWindow(t.a - w / 2, t.b + w / 2); showInfo(t.a);
  }
  document.getElementById("prevTrade").onclick = () => zoomTrade(current - 1);
  document.getElementById("nextTrade").onclick = () => zoomTrade(current + 1);
  document.querySelectorAll("tr[data-trade]").forEach((row) => {
    row.onclick = () => { zoomTrade(+row.dataset.trade); window.scrollTo({ top: 0, behavior: "smooth" }); };
  });
  function fromHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    if (q.has("trade")) { zoomTrade(+q.get("trade")); return; }
    if (q.has("from")) {
      const parse = (s) => Date.parse(s.length <= 10 ? s + "T00:00:00Z" : s.replace(" ", "T") + (s.endsWith("Z") ? "" : "Z")) / 1000;
      const a = indexOf(parse(q.get("from"))), b = q.has("to") ? indexOf(parse(q.get("to")) - 1) : n - 1;
      setWindow(a - 0.5, b + 0.5); return;
    }
    chart.timeScale().fitContent(); panels.timeScale().fitContent();
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
  window.addEventListener("resize", () => {
    chart.applyOptions({ width: width() }); panels.applyOptions({ width: width() }); requestAnimationFrame(placeTitles);
  });
  window.cascadeReport = { chart, panels, zoomTrade, setWindow };
})().catch((e) => { document.getElementById("error").textContent = "report error: " + e; throw e; });
