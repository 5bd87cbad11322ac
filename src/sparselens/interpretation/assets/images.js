/* Top images of a feature with its heat map over each picture, and a crop of the strongest
 * patches. Shared by the static report (inlined) and the viewer (/assets/images.js). Styles
 * are set through element.style (allowed by the viewer's Content Security Policy, unlike
 * style attributes); the overlay is a tiny PNG (one pixel per patch) that the browser
 * stretches smoothly over the picture. Entry fields: see image_render.feature_image_rows. */
(function () {
  "use strict";
  const SIDE = 160;
  const CROP = 96;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function layer(src, className, width, height) {
    const img = el("img", className);
    img.alt = "";
    if (src) img.src = src;
    Object.assign(img.style, { position: "absolute", left: "0", top: "0",
                               width: `${width}px`, height: `${height}px` });
    return img;
  }

  function frame(entry, side) {
    const box = el("div", "image-frame");
    Object.assign(box.style, { position: "relative", width: `${side}px`, height: `${side}px`,
                               background: "#ddd", overflow: "hidden" });
    box.appendChild(layer(entry.src, "image-picture", side, side));
    const overlay = layer(entry.overlay, "image-overlay", side, side);
    box.appendChild(overlay);
    box.title = "hover to hide the heat map";
    box.addEventListener("mouseenter", () => { overlay.style.opacity = "0"; });
    box.addEventListener("mouseleave", () => { overlay.style.opacity = "1"; });
    return box;
  }

  function crop(entry) {
    const [top, left, bottom, right] = entry.crop;
    const [rows, cols] = entry.grid;
    const scale = CROP / Math.max(bottom - top, right - left);
    const box = el("div", "image-crop");
    Object.assign(box.style, { position: "relative", width: `${CROP}px`, height: `${CROP}px`,
                               overflow: "hidden", background: "#ddd" });
    const inner = el("div");
    Object.assign(inner.style, { position: "absolute", left: `${-left * scale}px`,
                                 top: `${-top * scale}px` });
    inner.appendChild(layer(entry.src, "image-picture", cols * scale, rows * scale));
    inner.appendChild(layer(entry.overlay, "image-overlay", cols * scale, rows * scale));
    box.appendChild(inner);
    box.title = `patches ${top}-${bottom - 1} x ${left}-${right - 1} around the strongest`;
    return box;
  }

  function section(entries, heading) {
    const block = el("section", "detail-block image-examples");
    block.appendChild(el("h3", "", heading || `Top ${entries.length} images (heat map: ` +
                                               "activation per patch)"));
    const row = el("div", "image-row");
    Object.assign(row.style, { display: "flex", flexWrap: "wrap", gap: "14px" });
    for (const entry of entries) {
      const figure = el("figure", "image-example");
      figure.dataset.image = String(entry.image);
      figure.dataset.patch = entry.patch.join(",");
      Object.assign(figure.style, { margin: "0", display: "flex", flexDirection: "column",
                                    gap: "4px" });
      const pair = el("div");
      Object.assign(pair.style, { display: "flex", gap: "6px", alignItems: "flex-start" });
      pair.appendChild(frame(entry, SIDE));
      pair.appendChild(crop(entry));
      figure.appendChild(pair);
      const label = entry.label === null || entry.label === undefined ? "" :
        ` · label ${entry.label}`;
      figure.appendChild(el("figcaption", "", `${entry.act} at patch (${entry.patch[0]}, ` +
                                              `${entry.patch[1]}) · ${entry.key}${label}`));
      row.appendChild(figure);
    }
    block.appendChild(row);
    return block;
  }

  window.sparselensImages = { section };
})();
