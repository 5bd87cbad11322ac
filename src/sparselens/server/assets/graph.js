/* sparselens viewer: the attribution graph page (`sparselens serve --graphs circuit.json`).
 *
 *   #/graphs                 the served graphs
 *   #/graph/<name>?node=<id> one graph; `node` selects a node (kept in the URL: a permalink)
 *
 * The graph is drawn as SVG: one row per layer (token embeddings at the bottom, the metric at
 * the top), one column per token position, as many slots in a column as its busiest layer
 * needs. Edges are lines whose width and opacity follow |weight| and whose colour is its sign.
 * Strings from the file (tokens, ids, names) only go into textContent and SVG text nodes.
 * Uses the helpers viewer.js exposes on window.sparselens.helpers.
 */
"use strict";
(function () {
  const pages = (window.sparselens = window.sparselens || {});
  const ROW = 74, SLOT = 22, GAP = 18, LEFT = 70, TOP = 24, BOTTOM = 90;
  const KIND_ORDER = { metric: 0, latent: 1, error: 2, embedding: 3 };

  function h() { return pages.helpers; }

  function shownToken(text) {
    return text.replace(/\n/g, "↵").replace(/\t/g, "→").replace(/^ /, "·");
  }

  /* Node positions: x from the token position (slots within a column), y from the layer. */
  function layout(data) {
    const layers = [...new Set(data.nodes.map((n) => n.layer))].sort((a, b) => a - b);
    const rank = new Map(layers.map((l, i) => [l, i]));
    const cells = new Map();
    for (const node of data.nodes) {
      const key = `${node.layer}/${node.position}`;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(node);
    }
    const slots = data.tokens.map(() => 1);
    for (const [key, nodes] of cells) {
      const position = Number(key.split("/")[1]);
      slots[position] = Math.max(slots[position], nodes.length);
    }
    const left = [];
    let x = LEFT;
    for (const n of slots) {
      left.push(x);
      x += n * SLOT + GAP;
    }
    const width = x + 10;
    const height = TOP + layers.length * ROW + BOTTOM;
    const rowY = (layer) => TOP + (layers.length - 1 - rank.get(layer)) * ROW + ROW / 2;
    const at = new Map();
    for (const nodes of cells.values()) {
      nodes.sort((a, b) => (KIND_ORDER[a.kind] - KIND_ORDER[b.kind]) ||
                           ((b.influence || 0) - (a.influence || 0)));
      nodes.forEach((node, i) => {
        const p = node.position;
        const centre = left[p] + slots[p] * SLOT / 2;
        at.set(node.id, { x: centre + (i - (nodes.length - 1) / 2) * SLOT, y: rowY(node.layer) });
      });
    }
    const columns = data.tokens.map((_, p) => left[p] + slots[p] * SLOT / 2);
    return { layers, rowY, at, columns, width, height };
  }

  function layerName(layer, data) {
    if (layer < 0) return "tokens";
    const metric = data.nodes.find((n) => n.kind === "metric");
    if (metric && layer === metric.layer) return "output";
    return `layer ${layer}`;
  }

  function servedLatent(node) {
    if (node.kind !== "latent" || !node.dictionary) return null;
    const info = h().info();
    const served = info && info.dictionaries.find((d) => d.name === node.dictionary);
    if (!served || !(node.latent >= 0 && node.latent < served.n_latents)) return null;
    return h().featureHref(node.dictionary, node.latent);
  }

  function drawGraph(data, onPick) {
    const { svg, fmt } = h();
    const geo = layout(data);
    const root = svg("svg", { viewBox: `0 0 ${geo.width} ${geo.height}`, width: geo.width,
                              height: geo.height, class: "graph-svg", role: "img" });
    root.id = "graph-svg";
    root.appendChild(svg("title", {}, `Attribution graph of ${data.metric}`));
    for (const layer of geo.layers) {
      const y = geo.rowY(layer);
      root.appendChild(svg("line", { x1: LEFT - 6, y1: y, x2: geo.width - 10, y2: y,
                                     class: "graph-row" }));
      root.appendChild(svg("text", { x: LEFT - 10, y: y + 4, class: "graph-layer",
                                     "text-anchor": "end" }, layerName(layer, data)));
    }
    const base = TOP + geo.layers.length * ROW + 8;
    data.tokens.forEach((token, p) => {
      const x = geo.columns[p];
      const label = svg("text", { x, y: base, class: "graph-token", "text-anchor": "end",
                                  transform: `rotate(-40 ${x} ${base})` }, shownToken(token));
      label.appendChild(svg("title", {}, `position ${p}: ${JSON.stringify(token)}`));
      root.appendChild(label);
    });
    const scale = Math.max(1e-30, ...data.edges.map((e) => Math.abs(e.weight)));
    const edges = svg("g", { class: "graph-edges" });
    const lines = [];
    for (const edge of data.edges) {
      const a = geo.at.get(edge.source), b = geo.at.get(edge.target);
      const strength = Math.abs(edge.weight) / scale;
      const line = svg("line", {
        x1: a.x.toFixed(1), y1: a.y.toFixed(1), x2: b.x.toFixed(1), y2: b.y.toFixed(1),
        class: "graph-edge " + (edge.weight >= 0 ? "edge-pos" : "edge-neg"),
        "stroke-width": (0.6 + 4.4 * strength).toFixed(2),
        "stroke-opacity": (0.15 + 0.75 * strength).toFixed(3),
      });
      line.appendChild(svg("title", {}, `${edge.source} → ${edge.target}: ${fmt(edge.weight)}`));
      edges.appendChild(line);
      lines.push({ edge, line });
    }
    root.appendChild(edges);
    const maxInfluence = Math.max(1e-30, ...data.nodes.map((n) => n.influence || 0));
    const shapes = new Map();
    for (const node of data.nodes) {
      const { x, y } = geo.at.get(node.id);
      const group = svg("g", { class: `graph-node kind-${node.kind}`, "data-id": node.id,
                               tabindex: 0 });
      const size = 4 + 5 * Math.sqrt(Math.max(0, node.influence || 0) / maxInfluence);
      if (node.kind === "latent" || node.kind === "metric") {
        group.appendChild(svg("circle", { cx: x, cy: y, r: node.kind === "metric" ? 9 : size }));
      } else {
        group.appendChild(svg("rect", { x: x - size, y: y - size, width: 2 * size,
                                        height: 2 * size, rx: 2 }));
      }
      group.appendChild(svg("title", {}, `${node.id} (${node.kind}) activation ` +
                                         `${fmt(node.activation)}, influence ${fmt(node.influence)}`));
      group.addEventListener("mouseenter", () => onPick(node, false));
      group.addEventListener("mouseleave", () => onPick(null, false));
      group.addEventListener("click", () => onPick(node, true));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter") onPick(node, true);
      });
      root.appendChild(group);
      shapes.set(node.id, group);
    }
    const mark = (id) => {
      root.classList.toggle("has-selection", id !== null);
      for (const { edge, line } of lines) {
        line.classList.toggle("on", edge.source === id || edge.target === id);
      }
      for (const [nodeId, group] of shapes) group.classList.toggle("selected", nodeId === id);
    };
    return { root, mark };
  }

  function edgeList(title, edges, other) {
    const { el, fmt } = h();
    const box = el("div", "graph-edge-list");
    box.appendChild(el("h4", "", `${title} (${edges.length})`));
    const list = el("ol");
    const strongest = [...edges].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
    for (const edge of strongest.slice(0, 8)) {
      const item = el("li", "", edge[other]);
      item.appendChild(el("span", edge.weight >= 0 ? "num pos" : "num neg",
                          ` ${fmt(edge.weight)}`));
      list.appendChild(item);
    }
    box.appendChild(list);
    return box;
  }

  function nodeDetail(box, node, data) {
    const { el, fmt, link } = h();
    box.replaceChildren();
    if (!node) {
      box.appendChild(el("p", "muted", "Hover over a node to see it; click to keep it " +
                                       "selected (the URL then points at it)."));
      return;
    }
    box.appendChild(el("h3", "graph-node-id", node.id));
    const table = el("table", "kv");
    const rows = [["kind", node.kind], ["layer", node.layer], ["position", node.position],
                  ["token", JSON.stringify(data.tokens[node.position])],
                  ["activation", fmt(node.activation)], ["influence", fmt(node.influence)]];
    if (node.kind === "latent") rows.push(["dictionary", node.dictionary], ["latent", node.latent]);
    for (const [k, v] of rows) {
      const row = el("tr");
      row.appendChild(el("td", "", k));
      row.appendChild(el("td", `graph-${k}`, v));
      table.appendChild(row);
    }
    box.appendChild(table);
    if (node.kind === "latent") {
      const href = servedLatent(node);
      box.appendChild(href ? link(`Open latent ${node.latent} of ${node.dictionary}`, href,
                                  "graph-feature-link")
        : el("p", "muted", `${node.dictionary} is not served here, so there is no ` +
                           "feature page to open."));
    }
    box.appendChild(edgeList("Strongest inputs", data.edges.filter((e) => e.target === node.id),
                             "source"));
    box.appendChild(edgeList("Strongest outputs", data.edges.filter((e) => e.source === node.id),
                             "target"));
  }

  async function show(root, name, query) {
    const { el, fmt, api, params, section } = h();
    const data = await api(`/api/graphs/${encodeURIComponent(name)}`);
    root.appendChild(el("h1", "", `Attribution graph · ${name}`));
    const prompt = data.prompt || data.tokens.join("");
    root.appendChild(el("p", "muted", `${data.metric} = ${fmt(data.value)} on “${prompt}” · ` +
                                      `${fmt(data.nodes.length)} nodes, ` +
                                      `${fmt(data.edges.length)} edges`));
    const legend = el("p", "graph-legend muted");
    legend.appendChild(el("span", "swatch pos", "positive edge"));
    legend.appendChild(el("span", "swatch neg", "negative edge"));
    legend.appendChild(document.createTextNode(" width and opacity follow |weight|; circles " +
      "are latents (size: influence), grey squares error terms, green squares token " +
      "embeddings, the dark circle the metric."));
    root.appendChild(legend);
    const layoutBox = el("div", "graph-layout");
    const canvas = section(null, "graph-canvas");
    const detail = section(null, "graph-detail");
    layoutBox.appendChild(canvas);
    layoutBox.appendChild(detail);
    root.appendChild(layoutBox);
    const byId = new Map(data.nodes.map((n) => [n.id, n]));
    let selected = byId.get(params(query).get("node")) || null;
    let drawn = null;
    const pick = (node, keep) => {
      if (keep) {
        selected = node;
        const base = `#/graph/${encodeURIComponent(name)}`;
        history.replaceState(null, "", node ? `${base}?node=${encodeURIComponent(node.id)}`
          : base);
      }
      const shown = node || selected;
      nodeDetail(detail, shown, data);
      drawn.mark(shown ? shown.id : null);
    };
    drawn = drawGraph(data, pick);
    canvas.appendChild(drawn.root);
    pick(null, false);
  }

  async function list(root) {
    const { el, fmt, api, link } = h();
    root.appendChild(el("h1", "", "Attribution graphs"));
    const data = await api("/api/graphs");
    if (!data.graphs.length) {
      root.appendChild(el("p", "muted", "No graph is served: start `sparselens serve` with " +
                                        "--graphs circuit.json (written by `sparselens " +
                                        "circuit --out`)."));
      return;
    }
    const box = el("div", "results");
    for (const g of data.graphs) {
      const row = el("div", "result graph-row");
      row.appendChild(link(g.name, `#/graph/${encodeURIComponent(g.name)}`, "result-link"));
      row.appendChild(el("span", "muted", ` ${g.metric} = ${fmt(g.value)} · ` +
                                          `${fmt(g.n_nodes)} nodes, ${fmt(g.n_edges)} edges`));
      row.appendChild(el("div", "explanation-text", g.prompt));
      box.appendChild(row);
    }
    root.appendChild(box);
  }

  pages.graph = { show, list };
})();
