// The page of `maskrcnn serve`: upload an image, draw its detections, filter them by score
// and class, and download the shown ones. One prediction request per image, at a low score
// threshold; the slider and the class boxes only filter what that request returned.
"use strict";

(() => {
  const PREDICT_URL = "/v1/predict?score_threshold=0.05&mask_format=polygons";
  // The colours of maskrcnn.visualize.PALETTE, so the page and `maskrcnn predict` agree;
  // detection k (in score order) gets PALETTE[k % length] whatever the filter shows.
  const PALETTE = [
    [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180],
    [245, 130, 48], [70, 240, 240], [240, 50, 230], [210, 245, 60], [0, 128, 128],
    [170, 110, 40], [128, 0, 0], [128, 128, 0], [0, 0, 128], [128, 128, 128],
  ];
  const MASK_ALPHA = 0.45;
  const OUTLINE_SHADE = 0.6; // outline and box colour = instance colour darkened by this
  // Small images are drawn enlarged (by a whole factor, pixels kept sharp) up to about this
  // width, so that labels and lines stay legible on them; larger ones are drawn at their own size.
  const SMALL_IMAGE_WIDTH = 512;

  const $ = (id) => document.getElementById(id);
  const els = {
    model: $("model"), file: $("file"), drop: $("drop"), message: $("message"), timing: $("timing"),
    score: $("score"), scoreValue: $("score-value"), classes: $("classes"), count: $("count"),
    canvas: $("canvas"), rows: $("detections").tBodies[0],
    downloadJson: $("download-json"), downloadPng: $("download-png"),
  };

  const state = {
    model: null,     // the /v1/model answer
    result: null,    // the /v1/predict answer for the current image
    picture: null,   // the decoded image (ImageBitmap), or null when the browser cannot show it
    stem: "image",   // the file name without its extension, for the downloads
    scale: 1,        // canvas pixels per image pixel
    request: 0,      // counts uploads, so an answer to an older one is dropped
  };

  const setState = (name) => { document.body.dataset.state = name; };
  const colour = (rank, shade = 1) =>
    `rgb(${PALETTE[rank % PALETTE.length].map((c) => Math.round(c * shade)).join(",")})`;

  function showMessage(text) {
    els.message.textContent = text;
    els.message.hidden = !text;
  }

  // ---- the model ---------------------------------------------------------------------------

  async function loadModel() {
    try {
      const response = await fetch("/v1/model");
      if (!response.ok) throw new Error(await errorText(response));
      state.model = await response.json();
    } catch (error) {
      els.model.textContent = "The model description could not be loaded.";
      showMessage(`Could not load the model: ${error.message}`);
      setState("error");
      return;
    }
    const names = state.model.classes.map((c) => c.name);
    els.model.textContent =
      `Model: ${names.length} ${names.length === 1 ? "class" : "classes"} (${names.join(", ")})` +
      (state.model.keypoints ? `, ${state.model.keypoints.names.length} keypoints` : "") +
      `, on ${state.model.device}.`;
    for (const c of state.model.classes) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = String(c.label);
      box.addEventListener("change", render);
      label.append(box, ` ${c.name}`);
      els.classes.append(label);
    }
    if (document.body.dataset.state === "loading" && state.request === 0) setState("idle");
  }

  // ---- uploading -----------------------------------------------------------------------------

  // The server's {"error": ...} text, or the HTTP status when the answer is not that JSON.
  async function errorText(response) {
    const status = `HTTP ${response.status}${response.statusText ? " " + response.statusText : ""}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) { /* not JSON */ }
    return status;
  }

  async function upload(file) {
    const request = ++state.request;
    setState("loading");
    showMessage("");
    els.timing.textContent = `Predicting ${file.name}…`;
    clearResult();
    state.stem = file.name.replace(/\.[^.]*$/, "") || "image";

    const limit = state.model && state.model.limits && state.model.limits.max_body_bytes;
    if (limit && file.size > limit) {
      fail(request, `${file.name} is ${megabytes(file.size)}; the server accepts at most ${megabytes(limit)}.`);
      return;
    }
    // Any file is sent, whatever its type: the server decides what it can read.
    const form = new FormData();
    form.append("file", file, file.name);
    let result;
    try {
      const response = await fetch(PREDICT_URL, { method: "POST", body: form });
      if (!response.ok) {
        fail(request, await errorText(response));
        return;
      }
      result = await response.json();
    } catch (error) {
      fail(request, `The request failed: ${error.message}`);
      return;
    }
    // The browser may not read every format the server does (16-bit TIFF, say); then the
    // detections are drawn on a blank image of the size the server reports.
    let picture = null;
    try {
      picture = await createImageBitmap(file);
    } catch (_) { /* drawn without the picture */ }
    if (request !== state.request) return;
    state.result = result;
    state.picture = picture;
    const t = result.timing || {};
    els.timing.textContent =
      `${file.name}: ${result.image.width}×${result.image.height}, ${result.detections.length} ` +
      `detections in ${Math.round(t.total_ms)} ms (inference ${Math.round(t.inference_ms)} ms).` +
      (picture ? "" : " This browser cannot display the image itself.");
    render();
    setState("ready");
  }

  function fail(request, text) {
    if (request !== state.request) return;
    els.timing.textContent = "";
    showMessage(text);
    setState("error");
  }

  const megabytes = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;

  function clearResult() {
    state.result = null;
    state.picture = null;
    els.canvas.hidden = true;
    els.rows.replaceChildren();
    els.count.textContent = "No detections.";
    els.downloadJson.disabled = true;
    els.downloadPng.disabled = true;
  }

  els.file.addEventListener("change", () => {
    if (els.file.files.length) upload(els.file.files[0]);
  });
  // Dragging over the zone must be cancelled for the browser to allow a drop there.
  for (const name of ["dragenter", "dragover"]) {
    els.drop.addEventListener(name, (event) => {
      event.preventDefault();
      els.drop.classList.add("over");
    });
  }
  els.drop.addEventListener("dragleave", () => els.drop.classList.remove("over"));
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    els.drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) upload(file);
  });
  // A file dropped next to the zone would otherwise replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // ---- filtering and drawing -----------------------------------------------------------------

  // The detections the slider and the class boxes let through, each with its rank (0-based
  // position in the server's list, which is sorted by descending score).
  function shown() {
    if (!state.result) return [];
    const minimum = Number(els.score.value);
    const off = new Set(
      [...els.classes.querySelectorAll("input:not(:checked)")].map((box) => Number(box.value)));
    return state.result.detections
      .map((detection, rank) => ({ detection, rank }))
      .filter(({ detection }) => detection.score >= minimum && !off.has(detection.label));
  }

  function render() {
    els.scoreValue.value = Number(els.score.value).toFixed(2);
    if (!state.result) return;
    const list = shown();
    draw(list);
    listRows(list);
    const total = state.result.detections.length;
    els.count.textContent = `${list.length} of ${total} detections shown`;
    els.downloadJson.disabled = false;
    els.downloadPng.disabled = false;
  }

  function draw(list) {
    const { width, height } = state.result.image;
    const scale = width < SMALL_IMAGE_WIDTH ? Math.max(1, Math.floor(SMALL_IMAGE_WIDTH / width)) : 1;
    const canvas = els.canvas;
    canvas.width = width * scale;
    canvas.height = height * scale;
    canvas.dataset.scale = String(scale);
    canvas.hidden = false;
    state.scale = scale;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    if (state.picture) {
      ctx.drawImage(state.picture, 0, 0, canvas.width, canvas.height);
    } else {
      ctx.fillStyle = "#808080";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    // Lines and text keep about the same size on screen when CSS shrinks a large canvas.
    const px = Math.max(1, canvas.width / Math.max(1, canvas.clientWidth || canvas.width));
    // The worst first, so the best detections end up on top.
    for (const item of [...list].reverse()) drawMask(ctx, item, scale);
    for (const item of [...list].reverse()) drawBox(ctx, item, scale, px);
    if (state.model && state.model.keypoints) {
      for (const item of list) drawKeypoints(ctx, item, scale, px, state.model.keypoints.skeleton);
    }
  }

  function polygonPath(ctx, polygons, scale) {
    ctx.beginPath();
    for (const p of polygons) {
      if (p.length < 6) continue;
      ctx.moveTo(p[0] * scale, p[1] * scale);
      for (let i = 2; i < p.length; i += 2) ctx.lineTo(p[i] * scale, p[i + 1] * scale);
      ctx.closePath();
    }
  }

  // A mask's polygons are a union (as in COCO), but a path filled at once leaves holes
  // where they overlap with opposite windings; so they are filled opaque, one by one, on a
  // scratch canvas the size of their bounds, which is then laid over the image at MASK_ALPHA.
  const scratch = document.createElement("canvas");
  function drawMask(ctx, { detection, rank }, scale) {
    const polygons = detection.mask;
    if (!Array.isArray(polygons) || !polygons.length) return;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const p of polygons) {
      for (let i = 0; i + 1 < p.length; i += 2) {
        x0 = Math.min(x0, p[i]); x1 = Math.max(x1, p[i]);
        y0 = Math.min(y0, p[i + 1]); y1 = Math.max(y1, p[i + 1]);
      }
    }
    if (!(x1 >= x0)) return;
    const left = Math.floor(x0 * scale);
    const top = Math.floor(y0 * scale);
    scratch.width = Math.ceil(x1 * scale) - left + 1;
    scratch.height = Math.ceil(y1 * scale) - top + 1;
    const s = scratch.getContext("2d");
    s.translate(-left, -top);
    s.fillStyle = colour(rank);
    for (const polygon of polygons) {
      polygonPath(s, [polygon], scale);
      s.fill();
    }
    ctx.save();
    ctx.globalAlpha = MASK_ALPHA;
    ctx.drawImage(scratch, left, top);
    ctx.restore();
    polygonPath(ctx, polygons, scale);
    ctx.strokeStyle = colour(rank, OUTLINE_SHADE);
    ctx.lineWidth = 1;
    ctx.stroke();
  }

  function drawBox(ctx, { detection, rank }, scale, px) {
    const [x, y, w, h] = detection.box.map((v) => v * scale);
    ctx.strokeStyle = colour(rank, OUTLINE_SHADE);
    ctx.lineWidth = 2 * px;
    ctx.strokeRect(x, y, w, h);
    const text = `${detection.class_name} ${detection.score.toFixed(2)}`;
    const size = 13 * px;
    ctx.font = `${size}px system-ui, sans-serif`;
    const pad = 3 * px;
    const labelWidth = ctx.measureText(text).width + 2 * pad;
    const labelHeight = size + 2 * pad;
    // Above the box when there is room, else inside its top edge; never past the right side.
    const top = y - labelHeight >= 0 ? y - labelHeight : y;
    const left = Math.max(0, Math.min(x, ctx.canvas.width - labelWidth));
    ctx.fillStyle = colour(rank, OUTLINE_SHADE);
    ctx.fillRect(left, top, labelWidth, labelHeight);
    // Dark text on the light label colours (yellow, lime, cyan), white on the others.
    const [r, g, b] = PALETTE[rank % PALETTE.length].map((c) => c * OUTLINE_SHADE);
    ctx.fillStyle = 0.299 * r + 0.587 * g + 0.114 * b > 110 ? "#000" : "#fff";
    ctx.textBaseline = "top";
    ctx.fillText(text, left + pad, top + pad);
  }

  // keypoints: [x1, y1, v1, ...] in image pixels; a point is drawn where v > 0, and a
  // skeleton line (1-based pairs) where both of its ends are.
  function drawKeypoints(ctx, { detection, rank }, scale, px, skeleton) {
    const k = detection.keypoints;
    if (!Array.isArray(k)) return;
    const point = (i) => (k[3 * i + 2] > 0 ? [k[3 * i] * scale, k[3 * i + 1] * scale] : null);
    ctx.strokeStyle = colour(rank);
    ctx.lineWidth = 2 * px;
    for (const [a, b] of skeleton || []) {
      const p = point(a - 1);
      const q = point(b - 1);
      if (!p || !q) continue;
      ctx.beginPath();
      ctx.moveTo(...p);
      ctx.lineTo(...q);
      ctx.stroke();
    }
    ctx.fillStyle = colour(rank);
    for (let i = 0; 3 * i < k.length; i++) {
      const p = point(i);
      if (!p) continue;
      ctx.beginPath();
      ctx.arc(p[0], p[1], 3 * px, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  function listRows(list) {
    const rows = list.map(({ detection, rank }) => {
      const row = document.createElement("tr");
      const cell = (text, className) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (className) td.className = className;
        row.append(td);
        return td;
      };
      cell(String(rank + 1), "num");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = colour(rank);
      cell("").append(swatch);
      cell(detection.class_name);
      cell(detection.score.toFixed(2), "num");
      for (const v of detection.box) cell(v.toFixed(1), "num");
      return row;
    });
    els.rows.replaceChildren(...rows);
  }

  els.score.addEventListener("input", render);

  // ---- downloads -----------------------------------------------------------------------------

  function save(blob, name) {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    // Revoked later: the download may still be reading it right after click().
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }

  els.downloadJson.addEventListener("click", () => {
    const results = shown().map(({ detection }) => {
      const r = {
        image_id: 1,
        category_id: detection.category_id,
        bbox: detection.box,
        score: detection.score,
        segmentation: detection.mask || [],
      };
      if (detection.keypoints) r.keypoints = detection.keypoints;
      return r;
    });
    save(new Blob([JSON.stringify(results)], { type: "application/json" }), `${state.stem}_results.json`);
  });

  els.downloadPng.addEventListener("click", () => {
    els.canvas.toBlob((blob) => save(blob, `${state.stem}_overlay.png`), "image/png");
  });

  render();
  loadModel();
})();
