/* sparselens viewer: a small single-page front end over the server's JSON API.
 *
 * Every page is addressed by the URL hash, so any view can be bookmarked or pasted:
 *   #/                              overview
 *   #/d/<dictionary>/<latent>       feature page
 *   #/search/<query>                search results
 *   #/playground?d=..&f=..&text=..  text playground
 *   #/steer?d=..&f=..&coef=..&prompt=..  steering playground
 *   #/graphs, #/graph/<name>        attribution graphs (drawn by graph.js)
 *   #/compares, #/compare/<name>    comparison records (drawn by compare.js)
 * Text from the server (tokens, explanations, names) only ever goes into textContent or SVG
 * text nodes, never parsed as HTML, so a token "<script>" shows as those characters.
 * No external script, font or stylesheet: the page works offline.
 */
"use strict";
(function () {
  const view = () => document.getElementById("view");
  const SVG = "http://www.w3.org/2000/svg";
  let INFO = null;

  // ---------- helpers ----------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    const abs = Math.abs(value);
    if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return value.toExponential(2);
    return Number(value.toPrecision(4)).toLocaleString("en-US", { maximumFractionDigits: 6 });
  }

  function pct(fraction) {
    if (!fraction) return "0%";
    const p = fraction * 100;
    return (p >= 0.01 ? Number(p.toPrecision(3)) : p.toExponential(1)) + "%";
  }

  function featureHref(dictionary, latent) {
    return `#/d/${encodeURIComponent(dictionary)}/${latent}`;
  }

  function link(text, href, className) {
    const a = el("a", className, text);
    a.href = href;
    return a;
  }

  async function api(path, body) {
    const options = body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
    return data;
  }

  function errorBox(message) {
    return el("p", "error", message);
  }

  function section(title, className) {
    const node = el("section", "block " + (className || ""));
    if (title) node.appendChild(el("h3", "", title));
    return node;
  }

  function params(query) {
    return new URLSearchParams(query || "");
  }

  // ---------- charts (SVG, drawn from numbers) ----------

  const W = 560, H = 220, PAD = { l: 52, r: 44, t: 12, b: 38 };

  /* A range that can be drawn: a flat series gets a band around its value. */
  function spread(lo, hi) {
    if (hi > lo) return [lo, hi];
    const pad = Math.abs(lo) * 0.1 || 1;
    return [lo - pad, hi + pad];
  }

  function axes(root, xlo, xhi, ylo, yhi, xlabel, ylabel, opts) {
    [xlo, xhi] = spread(xlo, xhi);
    [ylo, yhi] = spread(ylo, yhi);
    const x = (v) => PAD.l + (v - xlo) / ((xhi - xlo) || 1) * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - (v - ylo) / ((yhi - ylo) || 1) * (H - PAD.t - PAD.b);
    root.appendChild(svg("line", { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b,
                                   class: "axis" }));
    root.appendChild(svg("line", { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b,
                                   class: "axis" }));
    for (let i = 0; i <= 4; i++) {
      const xv = xlo + (xhi - xlo) * i / 4;
      const yv = ylo + (yhi - ylo) * i / 4;
      const xl = opts && opts.xTick ? opts.xTick(xv) : fmt(Number(xv.toPrecision(3)));
      const yl = opts && opts.yTick ? opts.yTick(yv) : fmt(Number(yv.toPrecision(3)));
      root.appendChild(svg("text", { x: x(xv), y: H - PAD.b + 14, class: "tick",
                                     "text-anchor": "middle" }, xl));
      root.appendChild(svg("text", { x: PAD.l - 5, y: y(yv) + 3, class: "tick",
                                     "text-anchor": "end" }, yl));
      root.appendChild(svg("line", { x1: PAD.l, y1: y(yv), x2: W - PAD.r, y2: y(yv),
                                     class: "grid" }));
    }
    root.appendChild(svg("text", { x: (PAD.l + W - PAD.r) / 2, y: H - 4, class: "label",
                                   "text-anchor": "middle" }, xlabel));
    root.appendChild(svg("text", { x: 12, y: (PAD.t + H - PAD.b) / 2, class: "label",
                                   "text-anchor": "middle",
                                   transform: `rotate(-90 12 ${(PAD.t + H - PAD.b) / 2})` },
                         ylabel));
    return { x, y };
  }

  function chartBox(title, className) {
    const figure = el("figure", "chart " + (className || ""));
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    root.appendChild(svg("title", {}, title));
    figure.appendChild(root);
    figure.appendChild(el("figcaption", "", title));
    return { figure, root };
  }

  /* Bars over given edges; `xTick` formats the axis (e.g. 10^x for a log axis). */
  function histogram(title, edges, counts, xlabel, ylabel, opts) {
    const { figure, root } = chartBox(title, "histogram");
    if (!edges.length) {
      figure.appendChild(el("p", "muted", "Nothing to plot."));
      return figure;
    }
    const ymax = Math.max(1, ...counts);
    const { x, y } = axes(root, edges[0], edges[edges.length - 1], 0, ymax, xlabel, ylabel,
                          opts);
    counts.forEach((c, i) => {
      if (c <= 0) return;
      const bar = svg("rect", { x: x(edges[i]) + 0.5, y: y(c),
                                width: Math.max(1, x(edges[i + 1]) - x(edges[i]) - 1),
                                height: y(0) - y(c), class: "bar" });
      bar.appendChild(svg("title", {}, `${fmt(edges[i])} – ${fmt(edges[i + 1])}: ${fmt(c)}`));
      root.appendChild(bar);
    });
    return figure;
  }

  function lineChart(title, points, xlabel, log) {
    const { figure, root } = chartBox(title, "line-chart");
    const ys = points.map((p) => (log ? Math.log10(Math.max(p[1], 1e-12)) : p[1]));
    const xs = points.map((p) => p[0]);
    const { x, y } = axes(root, Math.min(...xs), Math.max(...xs), Math.min(...ys),
                          Math.max(...ys), xlabel, title,
                          log ? { yTick: (v) => fmt(Number(Math.pow(10, v).toPrecision(2))) }
                            : undefined);
    const d = xs.map((xv, i) => `${i ? "L" : "M"}${x(xv).toFixed(1)},${y(ys[i]).toFixed(1)}`);
    root.appendChild(svg("path", { d: d.join(""), class: "curve" }));
    return figure;
  }

  function scatter(title, points, xkey, ykey, xlabel, ylabel) {
    const { figure, root } = chartBox(title, "scatter");
    const usable = points.filter((p) => p[xkey] !== null && p[ykey] !== null);
    if (!usable.length) {
      figure.appendChild(el("p", "muted", `No dictionary reports ${ylabel}.`));
      return figure;
    }
    const xs = usable.map((p) => p[xkey]), ys = usable.map((p) => p[ykey]);
    const pad = (lo, hi) => (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
    const xp = pad(Math.min(...xs), Math.max(...xs)), yp = pad(Math.min(...ys), Math.max(...ys));
    const { x, y } = axes(root, Math.min(...xs) - xp, Math.max(...xs) + xp,
                          Math.min(...ys) - yp, Math.max(...ys) + yp, xlabel, ylabel);
    for (const p of usable) {
      const dot = svg("circle", { cx: x(p[xkey]), cy: y(p[ykey]), r: 5, class: "dot" });
      dot.appendChild(svg("title", {}, `${p.name}: ${xlabel} ${fmt(p[xkey])}, ${ylabel} ` +
                                       fmt(p[ykey])));
      root.appendChild(dot);
      root.appendChild(svg("text", { x: x(p[xkey]) + 7, y: y(p[ykey]) - 6, class: "tick" },
                           p.name));
    }
    return figure;
  }

  // ---------- tokens ----------

  function highlight(value, scale) {
    const strength = Math.min(1, Math.abs(value) / (scale || 1));
    const alpha = (0.12 + 0.78 * strength).toFixed(3);
    return value > 0 ? `rgba(249, 115, 22, ${alpha})` : `rgba(37, 99, 235, ${alpha})`;
  }

  function appendTokenText(node, text) {
    if (/^ +$/.test(text)) {
      node.appendChild(el("span", "ws", "·".repeat(text.length)));
      return;
    }
    for (const part of text.split(/(\n|\t)/)) {
      if (part === "\n") node.appendChild(el("span", "ws", "↵"));
      else if (part === "\t") node.appendChild(el("span", "ws", "→"));
      else if (part) node.appendChild(document.createTextNode(part));
    }
  }

  /* A line of tokens coloured by activation; `onClick(i)` makes tokens selectable. */
  function tokenLine(tokens, acts, special, centre, scale, onClick) {
    const line = el("span", "tokens");
    tokens.forEach((text, i) => {
      const span = el("span", "tok");
      appendTokenText(span, text);
      const value = acts ? acts[i] || 0 : 0;
      span.dataset.act = String(value);
      span.title = `activation ${fmt(value)}`;
      if (value !== 0) span.style.backgroundColor = highlight(value, scale);
      if (i === centre) span.classList.add("tok-centre");
      if (special && special[i]) span.classList.add("tok-special");
      if (onClick) {
        span.classList.add("clickable");
        span.addEventListener("click", () => onClick(i, span));
      }
      line.appendChild(span);
    });
    return line;
  }

  function exampleRow(example, scale) {
    const row = el("div", "example");
    row.appendChild(el("span", "example-act", fmt(example.act)));
    if (!example.tokens.length) {
      row.appendChild(el("span", "muted", `sequence ${example.seq}, position ${example.pos} ` +
                                          "(no token text: the viewer index is missing)"));
      return row;
    }
    row.appendChild(tokenLine(example.tokens, example.acts, example.special, example.centre,
                              scale));
    return row;
  }

  // ---------- overview ----------

  function metricCards(headline) {
    const cards = el("div", "cards");
    for (const metric of headline) {
      const card = el("div", "card");
      card.title = metric.key;
      card.appendChild(el("div", "label", metric.label));
      card.appendChild(el("div", "value", fmt(metric.value)));
      cards.appendChild(card);
    }
    return cards;
  }

  function kvTable(caption, values) {
    const table = el("table", "kv");
    table.appendChild(el("caption", "", caption));
    for (const [k, v] of Object.entries(values)) {
      const row = el("tr");
      row.appendChild(el("td", "", k));
      row.appendChild(el("td", "", fmt(v)));
      table.appendChild(row);
    }
    return table;
  }

  function dictionaryCard(d) {
    const block = section(null, "dictionary");
    block.dataset.name = d.name;
    const head = el("div", "dict-head");
    head.appendChild(el("h2", "", d.name));
    const parts = [d.architecture, `${fmt(d.n_latents)} latents`, d.hookpoint && `hookpoint ` +
                   d.hookpoint, d.model && `model ${d.model}`,
                   d.n_tokens && `examples from ${fmt(d.n_tokens)} tokens`,
                   d.n_explained ? `${fmt(d.n_explained)} explained` : null];
    head.appendChild(el("p", "muted", parts.filter(Boolean).join(" · ")));
    block.appendChild(head);
    if (d.headline.length) block.appendChild(metricCards(d.headline));
    const charts = el("div", "charts");
    if (d.density) {
      const title = `Feature density over ${fmt(d.density.n_tokens)} tokens ` +
        `(${fmt(d.density.dead)} of ${fmt(d.n_latents)} never fired)`;
      charts.appendChild(histogram(title, d.density.edges, d.density.counts,
                                   "fraction of tokens a latent fires on (log scale)",
                                   "latents",
                                   { xTick: (v) => fmt(Number(Math.pow(10, v).toPrecision(2))) }));
    } else {
      charts.appendChild(el("p", "muted", "No example store: run `sparselens report` for " +
                                          "densities and examples."));
    }
    if (d.curves) {
      for (const panel of d.curves.panels) {
        charts.appendChild(lineChart(panel.title, panel.points, d.curves.x, panel.log));
      }
    }
    block.appendChild(charts);
    const details = el("details", "all-metrics");
    details.appendChild(el("summary", "", "All metrics and settings"));
    const tables = el("div", "tables");
    tables.appendChild(kvTable("Metrics", d.metrics));
    tables.appendChild(kvTable(`Dictionary (${d.architecture})`, d.config));
    details.appendChild(tables);
    block.appendChild(details);
    const jump = el("form", "jump");
    const input = el("input");
    input.type = "number";
    input.min = "0";
    input.max = String(d.n_latents - 1);
    input.placeholder = "latent id";
    input.setAttribute("aria-label", `open a latent of ${d.name}`);
    jump.appendChild(input);
    jump.appendChild(el("button", "", "Open latent"));
    jump.appendChild(link("Browse all latents", `#/d/${encodeURIComponent(d.name)}`,
                          "browse-link"));
    jump.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value !== "") location.hash = featureHref(d.name, Number(input.value));
    });
    block.appendChild(jump);
    return block;
  }

  async function showOverview(root) {
    const data = await api("/api/overview");
    root.appendChild(el("h1", "", "Overview"));
    if (data.pareto.length) {
      const pareto = section("Dictionaries compared (Pareto)", "pareto");
      const charts = el("div", "charts");
      charts.appendChild(scatter("L0 against FVU", data.pareto, "l0", "fvu", "L0", "FVU"));
      charts.appendChild(scatter("L0 against loss recovered", data.pareto, "l0",
                                 "loss_recovered", "L0", "loss recovered"));
      pareto.appendChild(charts);
      root.appendChild(pareto);
    }
    for (const d of data.dictionaries) root.appendChild(dictionaryCard(d));
  }

  // ---------- feature page ----------

  function statsLine(stats) {
    const line = el("div", "stats");
    const stat = (label, value) => {
      const node = el("span", "stat", `${label} `);
      node.appendChild(el("b", "", value));
      line.appendChild(node);
    };
    stat("density", pct(stats.density));
    stat("fires on", `${fmt(stats.count)} of ${fmt(stats.n_tokens)} tokens`);
    stat("mean activation", fmt(stats.mean));
    stat("max", fmt(stats.max));
    return line;
  }

  function explanationBlock(explanations) {
    const block = section("Explanation", "explanations");
    if (!explanations.length) {
      block.appendChild(el("p", "muted", "No explanation yet (sparselens explain writes them " +
                                         "next to the dictionary)."));
      return block;
    }
    for (const e of explanations) {
      const item = el("div", "explanation");
      item.appendChild(el("p", "explanation-text", e.text));
      const scores = Object.entries(e.scores).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ");
      if (scores || e.source) {
        item.appendChild(el("p", "muted", [scores, e.source && `by ${e.source}`]
          .filter(Boolean).join(" · ")));
      }
      block.appendChild(item);
    }
    return block;
  }

  function tokenList(title, entries, className) {
    const box = el("div", "token-list " + className);
    box.appendChild(el("h4", "", title));
    for (const entry of entries) {
      const row = el("div", "token-row");
      const tok = el("span", "tok");
      appendTokenText(tok, entry.token);
      row.appendChild(tok);
      row.appendChild(el("span", "num", fmt(entry.value)));
      box.appendChild(row);
    }
    return box;
  }

  async function fillLogitLens(block, dictionary, latent) {
    try {
      const data = await api(`/api/d/${encodeURIComponent(dictionary)}/feature/${latent}` +
                             "/logit-lens");
      const lists = el("div", "token-lists");
      lists.appendChild(tokenList("Promoted (top)", data.top, "positive"));
      lists.appendChild(tokenList("Suppressed (bottom)", data.bottom, "negative"));
      block.appendChild(lists);
    } catch (err) {
      block.appendChild(el("p", "muted", `Not available: ${err.message}`));
    }
  }

  async function fillSimilar(block, dictionary, latent) {
    try {
      const data = await api(`/api/d/${encodeURIComponent(dictionary)}/feature/${latent}` +
                             "/similar");
      const lists = el("div", "similar-lists");
      for (const group of data.similar) {
        const box = el("div", "similar");
        box.appendChild(el("h4", "", `in ${group.dictionary}`));
        const list = el("ol");
        for (const item of group.latents) {
          const li = el("li");
          li.appendChild(link(`${group.dictionary} #${item.latent}`,
                              featureHref(group.dictionary, item.latent), "similar-link"));
          li.appendChild(el("span", "num", ` cos ${fmt(item.cosine)}`));
          if (item.explanation) li.appendChild(el("span", "muted", ` ${item.explanation}`));
          list.appendChild(li);
        }
        box.appendChild(list);
        lists.appendChild(box);
      }
      block.appendChild(lists);
    } catch (err) {
      block.appendChild(el("p", "muted", `Not available: ${err.message}`));
    }
  }

  async function showFeature(root, dictionary, latent) {
    const data = await api(`/api/d/${encodeURIComponent(dictionary)}/feature/${latent}`);
    const head = el("div", "feature-head");
    head.appendChild(el("h1", "", `${dictionary} · latent ${latent}`));
    const nav = el("div", "feature-nav");
    if (latent > 0) nav.appendChild(link("‹ previous", featureHref(dictionary, latent - 1)));
    nav.appendChild(link("next ›", featureHref(dictionary, latent + 1)));
    nav.appendChild(link("try in the playground",
                         `#/playground?d=${encodeURIComponent(dictionary)}&f=${latent}`));
    nav.appendChild(link("steer with it",
                         `#/steer?d=${encodeURIComponent(dictionary)}&f=${latent}`));
    head.appendChild(nav);
    root.appendChild(head);
    if (data.stats) root.appendChild(statsLine(data.stats));
    root.appendChild(explanationBlock(data.explanations));

    const grid = el("div", "feature-grid");
    const left = el("div", "feature-main");
    const right = el("div", "feature-side");
    grid.appendChild(left);
    grid.appendChild(right);
    root.appendChild(grid);

    if (data.images && data.images.top.length && window.sparselensImages) {
      left.appendChild(window.sparselensImages.section(data.images.top));
    }
    const hist = data.histogram;
    if (hist && hist.edges.length && hist.log) {
      const outside = hist.below || hist.above ?
        ` (${fmt(hist.below)} below, ${fmt(hist.above)} above the plotted range)` : "";
      left.appendChild(histogram(`Activation histogram: every firing counted${outside}`,
                                 hist.edges, hist.counts, "|activation| (log scale)",
                                 "firings", { xTick: (v) => fmt(Number(Math.pow(10, v)
                                   .toPrecision(2))) }));
    } else if (hist && hist.edges.length) {
      const title = `Activation histogram (estimated from ${hist.sampled} sampled firings)`;
      left.appendChild(histogram(title, hist.edges, hist.counts, "activation", "firings"));
    }
    const scale = data.stats ? data.stats.max : 1;
    const top = section(`Top ${data.top.length} activations`, "top-examples");
    if (!data.stats) top.appendChild(el("p", "muted", "No example store for this dictionary."));
    else if (!data.top.length) top.appendChild(el("p", "muted", "This latent never fired."));
    for (const example of data.top) top.appendChild(exampleRow(example, scale));
    left.appendChild(top);
    const quantiles = section("Samples across activation quantiles", "quantile-samples");
    for (const group of data.quantiles) {
      const box = el("div", "quantile-group");
      box.dataset.bin = String(group.bin);
      box.appendChild(el("h4", "", `Quantile ${group.bin + 1} · activations ${fmt(group.lo)} – ` +
                                   fmt(group.hi)));
      for (const example of group.examples) box.appendChild(exampleRow(example, scale));
      quantiles.appendChild(box);
    }
    left.appendChild(quantiles);

    const lens = section("Logit lens: output tokens of the decoder direction", "logit-lens");
    right.appendChild(lens);
    const similar = section("Most similar latents (decoder cosine)", "similar-block");
    right.appendChild(similar);
    await Promise.all([fillLogitLens(lens, dictionary, latent),
                       fillSimilar(similar, dictionary, latent)]);
  }

  // ---------- latent list ----------

  const SORT_LABELS = { density: "density, highest first", "density-asc": "density, lowest first",
                        mean: "mean activation", max: "max activation", id: "latent id" };

  function listHref(dictionary, sort, page, dead) {
    return `#/d/${encodeURIComponent(dictionary)}?sort=${sort}&page=${page}` +
      (dead ? "&dead=1" : "");
  }

  async function showLatents(root, dictionary, query) {
    const p = params(query);
    const sort = p.get("sort") || "density";
    const page = Number(p.get("page") || "0");
    const dead = p.get("dead") === "1";
    const size = 25;
    root.appendChild(el("h1", "", `${dictionary} · latents`));
    const controls = el("div", "controls");
    const select = el("select");
    select.id = "latent-sort";
    select.setAttribute("aria-label", "sort latents");
    for (const [value, label] of Object.entries(SORT_LABELS)) {
      const option = el("option", "", label);
      option.value = value;
      option.selected = value === sort;
      select.appendChild(option);
    }
    select.addEventListener("change", () => {
      location.hash = listHref(dictionary, select.value, 0, dead);
    });
    controls.appendChild(labelled("Sort by", select));
    const deadBox = el("input");
    deadBox.type = "checkbox";
    deadBox.checked = dead;
    deadBox.addEventListener("change", () => {
      location.hash = listHref(dictionary, sort, 0, deadBox.checked);
    });
    controls.appendChild(labelled("include latents that never fired", deadBox));
    root.appendChild(controls);
    const data = await api(`/api/d/${encodeURIComponent(dictionary)}/latents?sort=${sort}` +
                           `&page=${page}&size=${size}${dead ? "&dead=1" : ""}`);
    const pages = Math.max(1, Math.ceil(data.total / size));
    const list = el("div", "latent-list");
    for (const row of data.rows) {
      const item = el("div", "result latent-row");
      item.dataset.latent = String(row.latent);
      const head = el("div", "latent-head");
      head.appendChild(link(`latent ${row.latent}`, featureHref(dictionary, row.latent),
                            "result-link"));
      head.appendChild(el("span", "num", ` density ${pct(row.density)} · mean ` +
                                         `${fmt(row.mean)} · max ${fmt(row.max)}`));
      if (row.explanation) head.appendChild(el("span", "explanation-text", ` ${row.explanation}`));
      item.appendChild(head);
      if (row.example) item.appendChild(exampleRow(row.example, row.max));
      list.appendChild(item);
    }
    if (!data.rows.length) list.appendChild(el("p", "muted", "No latents to show."));
    root.appendChild(list);
    const pager = el("nav", "pager");
    if (page > 0) pager.appendChild(link("‹ previous", listHref(dictionary, sort, page - 1, dead)));
    pager.appendChild(el("span", "muted", ` page ${page + 1} of ${pages} ` +
                                          `(${fmt(data.total)} latents) `));
    if (page + 1 < pages) {
      pager.appendChild(link("next ›", listHref(dictionary, sort, page + 1, dead), "next-page"));
    }
    root.appendChild(pager);
  }

  // ---------- search ----------

  async function showSearch(root, query) {
    root.appendChild(el("h1", "", "Search"));
    const form = el("form", "search-form");
    const input = el("input");
    input.id = "search-q";
    input.type = "search";
    input.value = query;
    input.placeholder = "42, #42, a token such as \" Paris\", or words from explanations";
    input.setAttribute("aria-label", "search query");
    form.appendChild(input);
    form.appendChild(el("button", "", "Search"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = "#/search/" + encodeURIComponent(input.value);
    });
    root.appendChild(form);
    root.appendChild(el("p", "muted", "A token matches exactly first (mind the leading space " +
                                      "of word tokens), then in other case, with or without " +
                                      "the space."));
    if (!query) return;
    const data = await api("/api/search?q=" + encodeURIComponent(query));
    const list = el("div", "results");
    list.appendChild(el("p", "result-count", `${data.results.length} results for “${query}”`));
    for (const hit of data.results) {
      const row = el("div", "result");
      row.dataset.dictionary = hit.dictionary;
      row.dataset.latent = String(hit.latent);
      row.appendChild(link(`${hit.dictionary} · latent ${hit.latent}`,
                           featureHref(hit.dictionary, hit.latent), "result-link"));
      row.appendChild(el("span", "muted", ` ${hit.detail}`));
      if (hit.density !== null) row.appendChild(el("span", "num", ` density ${pct(hit.density)}`));
      if (hit.explanation && hit.kind !== "explanation") {
        row.appendChild(el("div", "explanation-text", hit.explanation));
      }
      list.appendChild(row);
    }
    root.appendChild(list);
  }

  // ---------- playgrounds ----------

  function dictionarySelect(selected) {
    const select = el("select");
    select.setAttribute("aria-label", "dictionary");
    for (const d of INFO.dictionaries) {
      const option = el("option", "", d.name);
      option.value = d.name;
      if (d.name === selected) option.selected = true;
      select.appendChild(option);
    }
    return select;
  }

  function numberInput(value, label, step) {
    const input = el("input");
    input.type = "number";
    input.step = step || "1";
    input.value = value;
    input.setAttribute("aria-label", label);
    return input;
  }

  function labelled(text, control) {
    const label = el("label", "control", text + " ");
    label.appendChild(control);
    return label;
  }

  function modelNotice(root) {
    if (!INFO.model) {
      root.appendChild(errorBox("No model is loaded: start `sparselens serve` with --model " +
                                "(the dictionaries' model) to run text through it."));
    }
  }

  async function showPlayground(root, query) {
    const p = params(query);
    root.appendChild(el("h1", "", "Text playground"));
    modelNotice(root);
    const form = el("form", "playground-form");
    const text = el("textarea");
    text.id = "playground-text";
    text.rows = 4;
    text.value = p.get("text") || "The Eiffel Tower is in Paris, the capital of France.";
    text.setAttribute("aria-label", "text to run through the model");
    const select = dictionarySelect(p.get("d") || INFO.dictionaries[0].name);
    const latent = numberInput(p.get("f") || "0", "latent");
    latent.id = "playground-latent";
    const controls = el("div", "controls");
    controls.appendChild(labelled("Dictionary", select));
    controls.appendChild(labelled("Latent", latent));
    const run = el("button", "", "Run");
    run.id = "playground-run";
    controls.appendChild(run);
    form.appendChild(text);
    form.appendChild(controls);
    root.appendChild(form);
    const out = el("div", "playground-out");
    root.appendChild(out);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const next = `#/playground?d=${encodeURIComponent(select.value)}&f=${latent.value}` +
        `&text=${encodeURIComponent(text.value)}`;
      if (location.hash === next) runPlayground(out, select.value, Number(latent.value), text.value);
      else location.hash = next;
    });
    if (p.get("text")) await runPlayground(out, select.value, Number(latent.value), text.value);
  }

  async function runPlayground(out, dictionary, latent, text) {
    out.replaceChildren(el("p", "muted", "Running…"));
    let data;
    try {
      data = await api("/api/playground", { text, dictionary, latent });
    } catch (err) {
      out.replaceChildren(errorBox(err.message));
      return;
    }
    out.replaceChildren();
    const scale = Math.max(1e-6, ...data.acts.map(Math.abs));
    out.appendChild(el("p", "muted", `Latent ${latent} of ${dictionary} on each token ` +
                                     `(max ${fmt(Math.max(...data.acts))}); click a token ` +
                                     "to see every latent firing there."));
    const detail = el("div", "token-detail");
    const line = tokenLine(data.tokens, data.acts, data.special, -1, scale, (i, span) => {
      for (const s of line.querySelectorAll(".selected")) s.classList.remove("selected");
      span.classList.add("selected");
      detail.replaceChildren(el("h4", "", `Latents firing on token ${i} “${data.tokens[i]}”`));
      const list = el("ol", "firing");
      for (const f of data.firing[i]) {
        const li = el("li");
        li.appendChild(link(`#${f.latent}`, featureHref(dictionary, f.latent)));
        li.appendChild(el("span", "num", ` ${fmt(f.act)}`));
        list.appendChild(li);
      }
      if (!data.firing[i].length) detail.appendChild(el("p", "muted", "No latent fires here."));
      detail.appendChild(list);
    });
    line.id = "playground-tokens";
    out.appendChild(el("div", "example")).appendChild(line);
    out.appendChild(detail);
  }

  async function showSteer(root, query) {
    const p = params(query);
    root.appendChild(el("h1", "", "Steering playground"));
    modelNotice(root);
    root.appendChild(el("p", "muted", "Adds coef × the latent's decoder direction at its " +
                                      "hookpoint on every position (Lens.generate with " +
                                      "AddLatent); greedy decoding, side by side with the " +
                                      "unedited model."));
    const form = el("form", "playground-form");
    const prompt = el("textarea");
    prompt.id = "steer-prompt";
    prompt.rows = 3;
    prompt.value = p.get("prompt") || "My favourite city is";
    const select = dictionarySelect(p.get("d") || INFO.dictionaries[0].name);
    const latent = numberInput(p.get("f") || "0", "latent");
    const coef = numberInput(p.get("coef") || "8", "coefficient", "any");
    const tokens = numberInput(p.get("n") || "24", "new tokens");
    const controls = el("div", "controls");
    controls.appendChild(labelled("Dictionary", select));
    controls.appendChild(labelled("Latent", latent));
    controls.appendChild(labelled("Coef", coef));
    controls.appendChild(labelled("New tokens", tokens));
    const run = el("button", "", "Generate");
    run.id = "steer-run";
    controls.appendChild(run);
    form.appendChild(prompt);
    form.appendChild(controls);
    root.appendChild(form);
    const hint = el("p", "muted steer-hint");
    root.appendChild(hint);
    const showScale = async () => {
      try {
        const f = await api(`/api/d/${encodeURIComponent(select.value)}/feature/` +
                            `${Number(latent.value)}`);
        hint.textContent = f.stats ? `Latent ${latent.value} reaches ${fmt(f.stats.max)} on ` +
          "its top example; a coefficient a few times that is a strong push." : "";
      } catch (err) {
        hint.textContent = "";
      }
    };
    latent.addEventListener("change", showScale);
    select.addEventListener("change", showScale);
    showScale();
    const out = el("div", "steer-out");
    root.appendChild(out);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      history.replaceState(null, "", `#/steer?d=${encodeURIComponent(select.value)}` +
        `&f=${latent.value}&coef=${coef.value}&n=${tokens.value}` +
        `&prompt=${encodeURIComponent(prompt.value)}`);
      out.replaceChildren(el("p", "muted", "Generating…"));
      try {
        const data = await api("/api/steer", {
          prompt: prompt.value, max_new_tokens: Number(tokens.value),
          edits: [{ dictionary: select.value, latent: Number(latent.value),
                    coef: Number(coef.value) }],
        });
        const columns = el("div", "side-by-side");
        for (const [title, text] of [["Unedited", data.plain], ["Steered", data.steered]]) {
          const col = el("div", "column");
          col.appendChild(el("h4", "", title));
          const body = el("p", "generation");
          body.appendChild(el("span", "muted", data.prompt));
          body.appendChild(document.createTextNode(text));
          col.appendChild(body);
          columns.appendChild(col);
        }
        out.replaceChildren(columns);
      } catch (err) {
        out.replaceChildren(errorBox(err.message));
      }
    });
  }

  // ---------- attribution graphs (graph.js draws them with these helpers) ----------

  const pages = (window.sparselens = window.sparselens || {});
  pages.helpers = { el, svg, fmt, api, link, section, errorBox, featureHref, params,
                    histogram, info: () => INFO };

  function graphPage(which, ...args) {
    if (!pages.graph) throw new Error("graph.js did not load");
    return pages.graph[which](...args);
  }

  function comparePage(which, ...args) {
    if (!pages.compare) throw new Error("compare.js did not load");
    return pages.compare[which](...args);
  }

  // ---------- routing ----------

  async function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const parts = path.split("/").filter((s) => s !== "");
    const root = view();
    root.replaceChildren();
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.remove("active");
    const mark = (name) => {
      const nav = document.querySelector(`[data-nav="${name}"]`);
      if (nav) nav.classList.add("active");
    };
    try {
      if (!INFO) INFO = await api("/api/info");
      if (parts[0] === "d" && parts.length === 3 && /^\d+$/.test(parts[2])) {
        await showFeature(root, decodeURIComponent(parts[1]), Number(parts[2]));
      } else if (parts[0] === "d" && parts.length === 2) {
        await showLatents(root, decodeURIComponent(parts[1]), query);
      } else if (parts[0] === "search") {
        mark("search");
        await showSearch(root, decodeURIComponent(parts.slice(1).join("/")));
      } else if (parts[0] === "playground") {
        mark("playground");
        await showPlayground(root, query);
      } else if (parts[0] === "steer") {
        mark("steer");
        await showSteer(root, query);
      } else if (parts[0] === "graphs" && parts.length === 1) {
        mark("graphs");
        await graphPage("list", root);
      } else if (parts[0] === "graph" && parts.length === 2) {
        mark("graphs");
        await graphPage("show", root, decodeURIComponent(parts[1]), query);
      } else if (parts[0] === "compares" || parts[0] === "compare") {
        mark("compares");
        await (parts.length === 2 ? comparePage("show", root, decodeURIComponent(parts[1]))
          : comparePage("list", root));
      } else if (!parts.length) {
        mark("overview");
        await showOverview(root);
      } else {
        root.appendChild(errorBox("No such page. Start from the overview."));
      }
    } catch (err) {
      root.appendChild(errorBox(err.message));
    }
    root.dataset.ready = hash;
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("quick-search").addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = "#/search/" + encodeURIComponent(document.getElementById("quick-q").value);
    });
    window.addEventListener("hashchange", route);
    route();
  });
})();
