/* sparselens viewer: the compare page (`sparselens serve ... --compare compare.json`).
 *
 *   #/compares                 the served comparison records
 *   #/compare/<name>           one record: matched-similarity histograms and PW-MCC per
 *                              measure, SVCCA/CKA against random pairings, matched pairs,
 *                              split latents and novel latents, each latent linked to its
 *                              feature page when its dictionary is served
 * Strings from the file only go into textContent (through the `el` helper of viewer.js).
 */
"use strict";
(function () {
  const pages = (window.sparselens = window.sparselens || {});
  const MEASURES = [["decoder_matching", "decoder", "Decoder cosine"],
                    ["activation_matching", "activation", "Activation correlation"]];
  const LISTED = 50;

  function h() { return pages.helpers; }

  function latentLink(served, side, latent) {
    const { el, link, featureHref } = h();
    const name = served[side];
    return name ? link(`${side} ${latent}`, featureHref(name, latent))
      : el("span", "", `${side} ${latent}`);
  }

  function table(headers, rows) {
    const { el } = h();
    const t = el("table", "compare-table");
    const head = el("tr");
    for (const text of headers) head.appendChild(el("th", "", text));
    t.appendChild(head);
    for (const cells of rows) {
      const tr = el("tr");
      for (const cell of cells) {
        const td = el("td");
        if (cell instanceof Node) td.appendChild(cell);
        else td.textContent = cell;
        tr.appendChild(td);
      }
      t.appendChild(tr);
    }
    return t;
  }

  function matchingBlock(data, key, pairsKey, title) {
    const { el, fmt, section, histogram } = h();
    const m = data[key];
    const box = section(`${title}: PW-MCC ${fmt(m.pwmcc)}`, "compare-matching");
    box.appendChild(el("p", "muted", `${m.method} matching of ${fmt(m.n_matched)} pairs ` +
      `(${fmt(m.n_a)} × ${fmt(m.n_b)} latents); upper bound ${fmt(m.upper_bound)}; ` +
      Object.entries(m.fraction_above).map(([t, f]) => `${fmt(100 * f)}% ≥ ${t}`).join(", ")));
    const grid = el("div", "compare-grid");
    grid.appendChild(histogram(`${title} of matched pairs`, m.histogram.edges,
                               m.histogram.counts, "similarity", "pairs"));
    const pairs = (data.pairs || {})[pairsKey];
    if (pairs) {
      const rows = pairs.a.slice(0, LISTED).map((a, i) => [
        latentLink(data.served, "A", a), latentLink(data.served, "B", pairs.b[i]),
        fmt(pairs.similarity[i])]);
      const side = el("div", "compare-pairs");
      side.appendChild(el("h4", "", `Most similar pairs (${fmt(Math.min(LISTED, pairs.a.length))}` +
                                    ` of ${fmt(pairs.a.length)})`));
      const scroll = el("div", "compare-scroll");
      scroll.appendChild(table(["A", "B", "similarity"], rows));
      side.appendChild(scroll);
      grid.appendChild(side);
    }
    box.appendChild(grid);
    return box;
  }

  function universalityBlock(data) {
    const { el, fmt, section } = h();
    const u = data.universality;
    const box = section("Paired feature spaces (Lan et al.)", "compare-universality");
    if (!u) {
      box.appendChild(el("p", "muted", data.shared_tokens ? "Too few pairs above the minimum " +
        "correlation for SVCCA/CKA." : "No shared tokens (give --cache or --texts)."));
      return box;
    }
    const f = data.pair_filter;
    if (f) {
      box.appendChild(el("p", "muted", `${fmt(f.n_kept)} of ${fmt(f.n_matched)} pairs kept ` +
        `(${fmt(f.n_low_correlation)} below the minimum correlation, ` +
        `${fmt(f.n_token_filtered)} token detectors or non-semantic)`));
    }
    box.appendChild(table(["measure", "paired", "random pairings", "p-value"],
      ["svcca", "cka"].map((k) => [k.toUpperCase(), fmt(u[k].paired),
        `${fmt(u[k].random_mean)} ± ${fmt(u[k].random_std)}`, fmt(u[k].p_value)])));
    return box;
  }

  function splitsBlock(data) {
    const { el, fmt, section } = h();
    const splits = data.splits || [];
    const box = section(`Feature splitting: ${fmt(splits.length)} latents split`,
                        "compare-splits");
    if (!splits.length) {
      box.appendChild(el("p", "muted", "None found (splitting needs decoders of one width " +
                                       "and different numbers of latents)."));
      return box;
    }
    const [small, large] = data.n_latents.A <= data.n_latents.B ? ["A", "B"] : ["B", "A"];
    box.appendChild(table([`latent (${small})`, `children (${large})`, "cosine", "best single"],
      splits.slice(0, LISTED).map((s) => {
        const children = document.createElement("span");
        s.children.forEach((c, i) => {
          if (i) children.appendChild(document.createTextNode(", "));
          children.appendChild(latentLink(data.served, large, c));
        });
        return [latentLink(data.served, small, s.latent), children, fmt(s.cosine),
                fmt(s.single_cosine)];
      })));
    return box;
  }

  function novelBlock(data, side) {
    const { el, fmt, section } = h();
    const novel = (data.novel || {})[side] || [];
    const box = section(`Novel in ${side}: ${fmt(novel.length)} latents`, "compare-novel");
    const list = el("p", "latent-list");
    novel.slice(0, 4 * LISTED).forEach((latent, i) => {
      if (i) list.appendChild(document.createTextNode(" · "));
      list.appendChild(latentLink(data.served, side, latent));
    });
    box.appendChild(novel.length ? list : el("p", "muted", "None."));
    return box;
  }

  async function show(root, name) {
    const { el, fmt, api } = h();
    const data = await api(`/api/comparisons/${encodeURIComponent(name)}`);
    root.appendChild(el("h1", "", `Comparison · ${name}`));
    for (const side of ["A", "B"]) {
      const served = data.served[side];
      root.appendChild(el("p", "muted", `${side}: ${data.dictionaries[side]} · ` +
        `${fmt(data.n_latents[side])} latents · ` +
        (served ? `served as ${served}` : "not served (no links)")));
    }
    if (data.decoder_note) root.appendChild(el("p", "note", data.decoder_note));
    for (const [key, pairsKey, title] of MEASURES) {
      if (data[key]) root.appendChild(matchingBlock(data, key, pairsKey, title));
    }
    root.appendChild(universalityBlock(data));
    root.appendChild(splitsBlock(data));
    root.appendChild(novelBlock(data, "A"));
    root.appendChild(novelBlock(data, "B"));
  }

  async function list(root) {
    const { el, fmt, api, link } = h();
    root.appendChild(el("h1", "", "Comparisons"));
    const data = await api("/api/comparisons");
    if (!data.comparisons.length) {
      root.appendChild(el("p", "muted", "No comparison is served: start `sparselens serve` " +
        "with --compare FOLDER/compare.json (written by `sparselens compare A B --out FOLDER`)."));
      return;
    }
    const box = el("div", "results");
    for (const c of data.comparisons) {
      const row = el("div", "result");
      row.appendChild(link(c.name, `#/compare/${encodeURIComponent(c.name)}`, "result-link"));
      const scores = Object.entries(c.pwmcc).filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => `${k.replace("_matching", "")} PW-MCC ${fmt(v)}`).join(", ");
      row.appendChild(el("span", "muted", ` ${c.dictionaries.A} vs ${c.dictionaries.B}` +
                                          (scores ? ` · ${scores}` : "")));
      box.appendChild(row);
    }
    root.appendChild(box);
  }

  pages.compare = { show, list };
})();
