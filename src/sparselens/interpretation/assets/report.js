/* sparselens report viewer: renders window.SPARSELENS_REPORT (from data.js).
 *
 * Only the current page of features is in the DOM, so thousands of features stay fast.
 * Views are addressed by the URL hash ("#feature-12"), so the back button and links work.
 * Data layout is documented in sparselens/interpretation/report_data.py.
 */
"use strict";
(function () {
  const DATA = window.SPARSELENS_REPORT;
  const PAGE_SIZE = 25;
  const PREVIEW_CONTEXTS = 3;
  const $ = (id) => document.getElementById(id);

  if (!DATA) {
    $("load-error").hidden = false;
    $("list-view").hidden = true;
    return;
  }

  const vocab = DATA.vocab;
  const special = new Set(DATA.special);
  const seqs = new Map(DATA.seqs.map((s) => [s[0], s]));
  const features = DATA.features;
  const byId = new Map(features.map((f) => [f.i, f]));
  const [BEFORE, AFTER] = DATA.window;
  const state = { query: "", sort: "id", hideDead: true, page: 0, scroll: 0 };
  const textCache = new Map();
  const tokenCache = new Map();
  let shown = [];

  // ---------- small helpers ----------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    const abs = Math.abs(value);
    if (abs >= 1e5 || abs < 1e-3) return value.toExponential(2);
    return Number(value.toPrecision(4)).toLocaleString("en-US", { maximumFractionDigits: 6 });
  }

  function fmtPercent(fraction) {
    if (!fraction) return "0%";
    const pct = fraction * 100;
    return (pct >= 0.01 ? Number(pct.toPrecision(3)) : pct.toExponential(1)) + "%";
  }

  function tokenAt(seqId, position) {
    const span = seqs.get(seqId);
    if (!span) return null;
    const index = position - span[1];
    return index >= 0 && index < span[2].length ? span[2][index] : null;
  }

  /* Token text with whitespace made visible: newline ↵, tab →, all-space tokens as dots. */
  function appendTokenText(node, text) {
    if (/^ +$/.test(text)) {
      node.appendChild(el("span", "ws", "·".repeat(text.length)));
      return;
    }
    const parts = text.split(/(\n|\t)/);
    for (const part of parts) {
      if (part === "\n") node.appendChild(el("span", "ws", "↵"));
      else if (part === "\t") node.appendChild(el("span", "ws", "→"));
      else if (part) node.appendChild(document.createTextNode(part));
    }
  }

  function highlight(value, scale) {
    const strength = Math.min(1, Math.abs(value) / (scale || 1));
    const alpha = (0.12 + 0.78 * strength).toFixed(3);
    return value > 0 ? `rgba(249, 115, 22, ${alpha})` : `rgba(37, 99, 235, ${alpha})`;
  }

  // ---------- contexts ----------

  /* One example: [seq, pos, act, [offset, value, ...]] -> a highlighted line of tokens. */
  function renderContext(example, scale) {
    const [seqId, position, activation, sparse] = example;
    const values = new Map();
    for (let i = 0; i < sparse.length; i += 2) values.set(sparse[i], sparse[i + 1]);
    const row = el("div", "context");
    row.appendChild(el("span", "context-act", fmt(activation)));
    const text = el("span", "context-text");
    if (tokenAt(seqId, position - BEFORE - 1) !== null) text.appendChild(el("span", "ellipsis", "…"));
    for (let offset = 0; offset <= BEFORE + AFTER; offset++) {
      const token = tokenAt(seqId, position - BEFORE + offset);
      if (token === null) continue;
      const span = el("span", "tok");
      appendTokenText(span, vocab[token]);
      const value = values.get(offset) || 0;
      span.dataset.act = String(value);
      span.title = `activation ${fmt(value)}`;
      if (value !== 0) span.style.backgroundColor = highlight(value, scale);
      if (offset === BEFORE) span.classList.add("tok-center");
      if (special.has(token)) span.classList.add("tok-special");
      text.appendChild(span);
    }
    if (tokenAt(seqId, position + AFTER + 1) !== null) text.appendChild(el("span", "ellipsis", "…"));
    row.appendChild(text);
    return row;
  }

  function contextText(example) {
    let text = "";
    for (let offset = 0; offset <= BEFORE + AFTER; offset++) {
      const token = tokenAt(example[0], example[1] - BEFORE + offset);
      if (token !== null) text += vocab[token];
    }
    return text;
  }

  /* Lower-cased text of a feature's top contexts, built on first search and cached. */
  function featureText(feature) {
    let text = textCache.get(feature.i);
    if (text === undefined) {
      text = (feature.top || []).map(contextText).join("\n").toLowerCase();
      textCache.set(feature.i, text);
    }
    return text;
  }

  // ---------- list view ----------

  const SORTS = {
    "id": (a, b) => a.i - b.i,
    "density-desc": (a, b) => (b.d || 0) - (a.d || 0) || a.i - b.i,
    "density-asc": (a, b) => (a.d || 0) - (b.d || 0) || a.i - b.i,
    "max-desc": (a, b) => (b.max || 0) - (a.max || 0) || a.i - b.i,
    "mean-desc": (a, b) => (b.mean || 0) - (a.mean || 0) || a.i - b.i,
  };

  /* Lower-cased text of the tokens a feature fires hardest on (its top examples' centres). */
  function activatingTokens(feature) {
    let tokens = tokenCache.get(feature.i);
    if (tokens === undefined) {
      tokens = (feature.top || []).map((e) => vocab[tokenAt(e[0], e[1])] || "")
        .map((t) => t.trim().toLowerCase());
      tokenCache.set(feature.i, tokens);
    }
    return tokens;
  }

  /* How well a feature matches a search, lower is better; null when it does not match.
   * The id itself ranks first; then features whose top activations are on the searched
   * word (more of them is better), then on a token containing it, then the word nearby. */
  function matchRank(feature, query, wantedId) {
    if (!query) return 0;
    if (feature.i === wantedId) return -2;
    if (!feature.n) return null;
    const tokens = activatingTokens(feature);
    const share = (test) => tokens.filter(test).length / Math.max(1, tokens.length);
    const exact = share((t) => t === query);
    if (exact > 0) return -exact;
    const partial = share((t) => t.includes(query));
    if (partial > 0) return 1 - partial;
    return featureText(feature).includes(query) ? 2 : null;
  }

  function refilter() {
    const query = state.query.trim().toLowerCase();
    const wantedId = /^#?\d+$/.test(query) ? Number(query.replace(/^#/, "")) : null;
    const ranks = new Map();
    for (const feature of features) {
      if (state.hideDead && !feature.n && feature.i !== wantedId) continue;
      const rank = matchRank(feature, query, wantedId);
      if (rank !== null) ranks.set(feature, rank);
    }
    const order = SORTS[state.sort];
    shown = [...ranks.keys()].sort((a, b) => ranks.get(a) - ranks.get(b) || order(a, b));
    state.page = 0;
    renderList();
  }

  function densityBar(density) {
    const bar = el("span", "density-bar");
    const fill = el("span");
    const level = density > 0 ? Math.max(0.03, Math.min(1, (Math.log10(density) + 7) / 7)) : 0;
    fill.style.width = `${(level * 100).toFixed(1)}%`;
    bar.appendChild(fill);
    bar.title = "density on a log scale from 1e-7 to 1";
    return bar;
  }

  function statsLine(feature, withTitle) {
    const head = el("div", "feature-head");
    if (withTitle) {
      const link = el("a", "feature-title feature-link", `Feature ${feature.i}`);
      link.href = `#feature-${feature.i}`;
      head.appendChild(link);
    }
    if (!feature.n) {
      head.appendChild(el("span", "stat", "never fired"));
      return head;
    }
    const stat = (label, value) => {
      const node = el("span", "stat", `${label} `);
      node.appendChild(el("b", "", value));
      return node;
    };
    const density = stat("density", fmtPercent(feature.d));
    density.appendChild(document.createTextNode(" "));
    density.appendChild(densityBar(feature.d));
    head.appendChild(density);
    head.appendChild(stat("fires on", `${feature.n.toLocaleString("en-US")} tokens`));
    head.appendChild(stat("max", fmt(feature.max)));
    head.appendChild(stat("mean", fmt(feature.mean)));
    return head;
  }

  function renderCard(feature) {
    const card = el("article", "feature-card");
    card.dataset.id = String(feature.i);
    card.appendChild(statsLine(feature, true));
    if (!feature.n) {
      card.appendChild(el("p", "dead", "This feature never fired on the collected tokens."));
      return card;
    }
    const contexts = el("div", "contexts");
    for (const example of feature.top.slice(0, PREVIEW_CONTEXTS)) {
      contexts.appendChild(renderContext(example, feature.max));
    }
    card.appendChild(contexts);
    return card;
  }

  function renderPager(pages) {
    const pager = $("pager");
    pager.replaceChildren();
    if (pages <= 1) return;
    const button = (label, page, disabled) => {
      const node = el("button", "", label);
      node.type = "button";
      node.disabled = disabled;
      node.addEventListener("click", () => {
        state.page = page;
        renderList();
        $("search").scrollIntoView({ block: "start" });
      });
      return node;
    };
    pager.appendChild(button("« First", 0, state.page === 0));
    pager.appendChild(button("‹ Previous", state.page - 1, state.page === 0));
    pager.appendChild(el("span", "page-info", `Page ${state.page + 1} of ${pages}`));
    pager.appendChild(button("Next ›", state.page + 1, state.page >= pages - 1));
    pager.appendChild(button("Last »", pages - 1, state.page >= pages - 1));
  }

  function renderList() {
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * PAGE_SIZE;
    const list = $("feature-list");
    list.replaceChildren(...shown.slice(start, start + PAGE_SIZE).map(renderCard));
    if (!shown.length) list.appendChild(el("p", "empty", "No feature matches this search."));
    const total = features.length.toLocaleString("en-US");
    $("result-count").textContent = `${shown.length.toLocaleString("en-US")} of ${total} features`;
    renderPager(pages);
  }

  // ---------- detail view ----------

  function renderQuantiles(feature, block) {
    const samples = feature.q || [];
    if (!samples.length) {
      block.appendChild(el("p", "empty", "No samples were collected."));
      return;
    }
    for (let bin = DATA.bins - 1; bin >= 0; bin--) {
      const inBin = samples.filter((s) => s[0] === bin);
      if (!inBin.length) continue;
      const acts = inBin.map((s) => s[3]);
      const label = `Quantile ${bin + 1} of ${DATA.bins} · activations ` +
        `${fmt(Math.min(...acts))} – ${fmt(Math.max(...acts))}`;
      block.appendChild(el("h4", "", label));
      const group = el("div", "contexts quantile-group");
      group.dataset.bin = String(bin);
      for (const sample of inBin.slice().reverse()) {
        group.appendChild(renderContext(sample.slice(1), feature.max));
      }
      block.appendChild(group);
    }
  }

  function renderDetail(feature) {
    const view = $("detail-view");
    view.replaceChildren();
    const back = el("a", "back", "← All features");
    back.href = "#";
    view.appendChild(back);
    view.appendChild(el("h2", "", `Feature ${feature.i}`));
    view.appendChild(statsLine(feature, false));
    if (!feature.n) {
      view.appendChild(el("p", "dead", "This feature never fired on the collected tokens."));
      return;
    }
    const images = DATA.images && DATA.images.features[String(feature.i)];
    if (images && window.sparselensImages) view.appendChild(window.sparselensImages.section(images));
    const top = el("section", "detail-block top-examples");
    top.appendChild(el("h3", "", `Top ${feature.top.length} activations`));
    const contexts = el("div", "contexts");
    for (const example of feature.top) contexts.appendChild(renderContext(example, feature.max));
    top.appendChild(contexts);
    view.appendChild(top);
    const quantiles = el("section", "detail-block quantile-samples");
    quantiles.appendChild(el("h3", "", "Random samples across activation quantiles"));
    renderQuantiles(feature, quantiles);
    view.appendChild(quantiles);
  }

  // ---------- header ----------

  function renderHeader() {
    const meta = DATA.meta;
    const config = (meta.config || {});
    const parts = [meta.architecture, `${meta.n_features.toLocaleString("en-US")} features`,
      `${meta.n_live.toLocaleString("en-US")} fired`, `hookpoint ${meta.hookpoint}`,
      config.model ? `model ${config.model}` : null,
      `${meta.n_tokens.toLocaleString("en-US")} tokens`];
    $("subtitle").textContent = parts.filter(Boolean).join(" · ");
    const cards = $("metric-cards");
    for (const metric of DATA.headline) {
      const card = el("div", "card");
      card.title = metric.key;
      card.appendChild(el("div", "label", metric.label));
      card.appendChild(el("div", "value", fmt(metric.value)));
      cards.appendChild(card);
    }
    const plots = $("plots");
    for (const plot of DATA.plots) {
      const figure = el("figure", plot.wide ? "plot wide" : "plot");
      const link = el("a");
      link.href = plot.file;
      link.target = "_blank";
      const image = el("img");
      image.src = plot.file;
      image.alt = plot.title;
      link.appendChild(image);
      figure.appendChild(link);
      figure.appendChild(el("figcaption", "", plot.title));
      plots.appendChild(figure);
    }
    fillTable($("metrics-table"), "Metrics", DATA.metrics);
    fillTable($("config-table"), `Dictionary (${meta.architecture})`, config);
  }

  function fillTable(table, caption, values) {
    table.appendChild(el("caption", "", caption));
    for (const [key, value] of Object.entries(values)) {
      const row = el("tr");
      row.appendChild(el("td", "", key));
      row.appendChild(el("td", "", fmt(value)));
      table.appendChild(row);
    }
  }

  // ---------- routing ----------

  function route() {
    const match = /^#feature-(\d+)$/.exec(window.location.hash);
    const feature = match ? byId.get(Number(match[1])) : null;
    const listView = $("list-view");
    const detailView = $("detail-view");
    if (feature) {
      if (!listView.hidden) state.scroll = window.scrollY;
      renderDetail(feature);
      listView.hidden = true;
      detailView.hidden = false;
      window.scrollTo(0, 0);
    } else {
      detailView.hidden = true;
      listView.hidden = false;
      window.scrollTo(0, state.scroll);
    }
  }

  $("search").addEventListener("input", (event) => {
    state.query = event.target.value;
    refilter();
  });
  $("search").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && shown.length) window.location.hash = `feature-${shown[0].i}`;
  });
  $("sort").addEventListener("change", (event) => {
    state.sort = event.target.value;
    refilter();
  });
  $("hide-dead").addEventListener("change", (event) => {
    state.hideDead = event.target.checked;
    refilter();
  });
  window.addEventListener("hashchange", route);

  renderHeader();
  refilter();
  route();
})();
