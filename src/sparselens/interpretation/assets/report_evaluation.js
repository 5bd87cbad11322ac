/* sparselens report: the evaluation section (the `sparselens bench` metrics of the dictionary).
 *
 * Reads window.SPARSELENS_REPORT.evaluation (interpretation/report_evaluation.py documents
 * its shape) and fills #evaluation: one card per headline metric, then one table per metric
 * section with its numbers, or the reason it was skipped. No evaluation: the section stays
 * hidden.
 */
"use strict";
(function () {
  const DATA = window.SPARSELENS_REPORT;
  const root = document.getElementById("evaluation");
  if (!DATA || !DATA.evaluation || !root) return;
  const evaluation = DATA.evaluation;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function shown(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    return Number.isInteger(value) ? value.toLocaleString("en-US") : String(value);
  }

  root.querySelector(".evaluation-source").textContent =
    `From ${evaluation.file} (definitions in docs/evaluation.md).`;
  const cards = root.querySelector(".evaluation-cards");
  for (const [label, value] of evaluation.headline) {
    const card = el("div", "card");
    card.appendChild(el("div", "label", label));
    const skipped = value.startsWith("skipped");
    card.appendChild(el("div", skipped ? "value skipped" : "value", skipped ? "skipped" : value));
    if (skipped) card.title = value;
    cards.appendChild(card);
  }
  const tables = root.querySelector(".evaluation-tables");
  for (const section of evaluation.sections) {
    const table = el("table", "kv");
    const seconds = section.seconds === null ? "" : ` (${shown(section.seconds)} s)`;
    table.appendChild(el("caption", "", section.name + seconds));
    const rows = section.skipped === null ? section.rows : [["skipped", section.skipped]];
    for (const [key, value] of rows) {
      const row = el("tr");
      row.appendChild(el("td", "", key));
      row.appendChild(el("td", "", shown(value)));
      table.appendChild(row);
    }
    tables.appendChild(table);
  }
  root.hidden = false;
})();
