"""The browser side of inspection, written once: CSS and JavaScript that show a text token by token,
coloured by surprisal or by a cell's activation, with each token's alternatives on hover or click.

Embedded by the self-contained HTML report (`keras_chargen.inspect_report`) and by the serving
playground's inspect view (`keras_chargen.serving.playground`). Standard library only: the server
imports it without any model code. The script defines one global, `InspectView`:

- `InspectView.render(box, data, colours)`: fills `box` with one `<span>` per position; `data` is
  `{tokens: [str], prob: [number|null], top: [[[token, prob], ...]]}` and `colours[i]` a CSS colour;
- `InspectView.surprisalColours(prob)` / `InspectView.activationColours(values)`: the colour scales;
- `InspectView.tooltip(box, data, extra)`: the hover / click panel of one position (`extra(i)` adds a line);
- `InspectView.shown(token)`: a token as shown in lists (newline `⏎`, space `␣`, tab `⇥`).
"""

from __future__ import annotations

MAX_BITS = 8.0  # surprisal at which the colour scale saturates

VIEW_CSS = """
.iv-text { white-space: pre-wrap; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .95rem;
           line-height: 1.55; background: #fff; border: 1px solid #ddd; padding: .8rem; border-radius: 4px; }
.iv-text span { cursor: pointer; border-radius: 2px; }
.iv-text span.iv-pinned { outline: 2px solid #222; }
.iv-tip { position: fixed; z-index: 10; background: #fffef8; border: 1px solid #999; box-shadow: 0 2px 8px #0003;
          padding: .4rem .6rem; font-size: .85rem; pointer-events: none; min-width: 11rem; display: none; }
.iv-tip table { border-collapse: collapse; width: 100%; }
.iv-tip td { padding: 0 .3rem; font-family: ui-monospace, monospace; }
.iv-tip td.iv-bar { width: 6rem; }
.iv-tip td.iv-bar div { background: #4a7bd0; height: .7rem; }
.iv-tip tr.iv-actual td { font-weight: 700; }
.iv-legend { display: flex; align-items: center; gap: .4rem; font-size: .8rem; color: #555; margin: .3rem 0; }
.iv-legend .iv-ramp { width: 12rem; height: .8rem; border: 1px solid #ccc; }
"""

VIEW_JS = r"""
const InspectView = (() => {
  const MAX_BITS = __MAX_BITS__;
  const shown = (t) => t.replace(/\n/g, "⏎").replace(/\t/g, "⇥").replace(/^ $/, "␣");
  function mix(a, b, x) { return a.map((v, i) => Math.round(v + (b[i] - v) * x)); }
  function surprisalColour(p) {  // white (certain) → yellow → red (8+ bits)
    if (p === null || p === undefined || !(p > 0)) return p === 0 ? "rgb(200,0,0)" : "transparent";
    const x = Math.min(1, -Math.log2(p) / MAX_BITS);
    const rgb = x < 0.5 ? mix([255, 255, 255], [255, 214, 90], x * 2) : mix([255, 214, 90], [214, 40, 40], x * 2 - 1);
    return `rgb(${rgb.join(",")})`;
  }
  function surprisalColours(prob) { return prob.map(surprisalColour); }
  function activationColours(values) {  // blue (negative) … white … red (positive), scaled by the largest |value|
    const top = Math.max(1e-6, ...values.map(Math.abs));
    return values.map((v) => {
      const x = Math.min(1, Math.abs(v) / top);
      const rgb = v < 0 ? mix([255, 255, 255], [40, 90, 214], x) : mix([255, 255, 255], [214, 40, 40], x);
      return `rgb(${rgb.join(",")})`;
    });
  }
  function render(box, data, colours) {
    box.textContent = "";
    const fragment = document.createDocumentFragment();
    data.tokens.forEach((token, i) => {
      const span = document.createElement("span");
      span.textContent = token;
      span.dataset.i = i;
      span.style.background = colours[i];
      fragment.appendChild(span);
    });
    box.appendChild(fragment);
  }
  function tipHtml(data, i, extra) {
    const escape = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
    const token = data.tokens[i], p = data.prob[i];
    let html = `<div><b>${escape(shown(token))}</b> at position ${i}</div>`;
    if (p === null || p === undefined) html += "<div>first position: no prediction</div>";
    else html += `<div>p = ${p.toPrecision(3)}, ${(-Math.log2(p)).toFixed(2)} bits</div>`;
    if (extra) html += `<div>${extra(i)}</div>`;
    const top = data.top[i] || [];
    if (top.length) {
      html += "<table>";
      for (const [t, q] of top) {
        const actual = t === token.trim() || t === token ? ' class="iv-actual"' : "";
        html += `<tr${actual}><td>${escape(shown(t))}</td><td>${q.toFixed(3)}</td>` +
                `<td class="iv-bar"><div style="width:${Math.round(q * 100)}%"></div></td></tr>`;
      }
      html += "</table>";
    }
    return html;
  }
  function tooltip(box, data, extra, onPick) {
    const tip = document.createElement("div");
    tip.className = "iv-tip";
    document.body.appendChild(tip);
    let pinned = null;
    const place = (event, i) => {
      tip.innerHTML = tipHtml(data(), i, extra);
      tip.style.display = "block";
      const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      const below = event.clientY + 18 + tip.offsetHeight <= window.innerHeight;
      const y = below ? event.clientY + 18 : event.clientY - tip.offsetHeight - 10;
      tip.style.left = `${x}px`; tip.style.top = `${y}px`;
    };
    box.addEventListener("mousemove", (event) => {
      const i = event.target.dataset ? event.target.dataset.i : undefined;
      if (i !== undefined && pinned === null) place(event, Number(i));
    });
    box.addEventListener("mouseleave", () => { if (pinned === null) tip.style.display = "none"; });
    box.addEventListener("click", (event) => {
      const i = event.target.dataset ? event.target.dataset.i : undefined;
      box.querySelectorAll(".iv-pinned").forEach((s) => s.classList.remove("iv-pinned"));
      if (i === undefined || pinned === Number(i)) { pinned = null; tip.style.display = "none"; return; }
      pinned = Number(i);
      event.target.classList.add("iv-pinned");
      place(event, pinned);
      if (onPick) onPick(pinned);
    });
    return { hide: () => { pinned = null; tip.style.display = "none"; } };
  }
  return { render, surprisalColours, activationColours, tooltip, shown, MAX_BITS };
})();
""".replace("__MAX_BITS__", repr(MAX_BITS))

LEGEND_HTML = (
    '<div class="iv-legend">certain <span class="iv-ramp" style="background: linear-gradient(90deg, '
    f'#fff, rgb(255,214,90), rgb(214,40,40))"></span> surprised ({MAX_BITS:g}+ bits)</div>'
)
