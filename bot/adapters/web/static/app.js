// DreamBot's page. The form is built from /api/modes (modes, options, presets): nothing here lists options.
// A dream is followed through /api/jobs/<id>/events (server-sent events), with polling when that fails.

const FINISHED = new Set(["done", "failed", "cancelled"]);
const POLL_MS = 1500;

const $ = (id) => document.getElementById(id);

const state = {
  modes: [],
  presets: [],
  networks: [],
  limits: {},
  mode: null, // the chosen mode's description
  job: null, // the view of the job on the card
  stream: null, // its EventSource
  pollTimer: null,
  previewBusy: false,
  previewTick: 0,
  chosenUrl: null, // object URL of the chosen photo's preview
  layerRequest: 0, // answers to older layer requests are dropped
};

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// ------------------------------------------------------------------------------------------------ helpers

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", ...options });
  } catch (error) {
    throw new ApiError("The page cannot reach DreamBot right now; check that it is running and try again.", 0);
  }
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("application/json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const message =
      (body && body.error) || `DreamBot answered ${response.status} ${response.statusText}; please try again.`;
    throw new ApiError(message, response.status);
  }
  return body;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function titleCase(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function number(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(3)));
}

function about(seconds) {
  if (seconds < 10) return "a few seconds";
  if (seconds < 55) return `about ${Math.round(seconds / 5) * 5} seconds`;
  if (seconds < 90) return "about 1 minute";
  if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} minutes`;
  return `about ${Math.round(seconds / 3600)} hours`;
}

function showAlert(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

function fileUrl(key) {
  return `/files/${encodeURIComponent(key)}`;
}

function jobUrl(id, rest = "") {
  return `/api/jobs/${encodeURIComponent(id)}${rest}`;
}

// ------------------------------------------------------------------------------------------------ the form

function buildTabs() {
  const tabs = $("mode-tabs");
  tabs.replaceChildren(
    ...state.modes.map((spec) =>
      el("button", {
        type: "button",
        role: "tab",
        id: `tab-${spec.mode}`,
        class: "tab",
        "data-mode": spec.mode,
        "aria-selected": "false",
        title: spec.help,
        text: titleCase(spec.mode),
        onclick: () => selectMode(spec.mode, true),
      }),
    ),
  );
  tabs.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
    const index = state.modes.indexOf(state.mode);
    const step = event.key === "ArrowRight" ? 1 : -1;
    const next = state.modes[(index + step + state.modes.length) % state.modes.length];
    selectMode(next.mode, true);
    $(`tab-${next.mode}`).focus();
  });
}

function selectMode(name, fromUser = false) {
  const spec = state.modes.find((m) => m.mode === name) || state.modes[0];
  state.mode = spec;
  for (const tab of $("mode-tabs").children) {
    const selected = tab.dataset.mode === spec.mode;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
  }
  $("mode-help").replaceChildren(
    el("span", { text: `${titleCase(spec.help)}.` }),
    " ",
    el("span", { class: "muted", text: "In a chat: " }),
    el("code", { text: spec.example }),
  );
  $("photo-section").hidden = !spec.needs_image;
  const subject = $("subject-section");
  subject.hidden = !spec.subject;
  if (spec.subject) {
    $("subject-label").textContent = { class: "Class", classes: "Classes", text: "Text" }[spec.subject] || "Subject";
    $("subject").placeholder = examplePlaceholder(spec);
    $("subject-hint").textContent =
      {
        class: "A thing the network knows, e.g. banana, jellyfish, tabby cat.",
        classes: "Two or more, joined with +.",
        text: "Up to 12 letters or digits.",
      }[spec.subject] || "";
  }
  buildOptions(spec);
  showAlert($("form-error"), "");
  if (fromUser) history.replaceState(null, "", `#${spec.mode}`);
}

function examplePlaceholder(spec) {
  // "visualize banana" -> "banana"; "path jellyfish shape=line" -> "jellyfish"
  const words = spec.example.split(/\s+/).filter((word) => !word.includes("="));
  if (words.length && words[0].toLowerCase() === spec.mode) words.shift();
  return words.join(" ");
}

function buildOptions(spec) {
  const container = $("options");
  const simple = el("div", { class: "option-grid" });
  const parts = [];
  let layerOption = null;
  for (const option of spec.options) {
    if (option.name === "preset") parts.unshift(presetPicker(option));
    else if (option.name === "layer") layerOption = option;
    else simple.append(optionField(option));
  }
  if (simple.children.length) parts.push(simple);
  if (layerOption) parts.push(layerPicker(layerOption));
  container.replaceChildren(...parts);
  if (layerOption) loadLayers(currentNetwork());
}

function optionField(option) {
  const id = `opt-${option.name}`;
  let input;
  if (option.choices) {
    input = el(
      "select",
      { id, name: option.name },
      el("option", { value: "", text: option.name === "network" ? "default (lite0)" : "default" }),
      option.choices.map((choice) => el("option", { value: choice, text: choice })),
    );
    if (option.name === "network") {
      input.addEventListener("change", () => loadLayers(currentNetwork()));
      input.options[0].textContent = `default (${option.example || option.choices[0]})`;
    }
  } else if (option.type === "int" || option.type === "float") {
    input = el("input", {
      id,
      name: option.name,
      type: "number",
      inputmode: option.type === "int" ? "numeric" : "decimal",
      min: option.min,
      max: option.max,
      step: option.type === "int" ? 1 : "any",
      placeholder: "auto",
    });
  } else {
    input = el("input", { id, name: option.name, type: "text", placeholder: option.example || "", autocomplete: "off" });
  }
  const range =
    option.min !== null && option.max !== null ? ` (${number(option.min)}–${number(option.max)})` : "";
  return el(
    "div",
    { class: "field", "data-option": option.name },
    el("label", { for: id, text: titleCase(option.name) }),
    input,
    el("small", { class: "hint", text: `${option.help}${range}` }),
  );
}

function presetPicker(option) {
  const hidden = el("input", { type: "hidden", id: "opt-preset", name: "preset", value: "" });
  const known = new Map(state.presets.map((p) => [p.name, p.description]));
  const choices = option.choices || state.presets.map((p) => p.name);
  const initial = choices.includes("default") ? "default" : choices[0];
  const buttons = choices.map((name) =>
    el(
      "button",
      {
        type: "button",
        class: "preset",
        "data-preset": name,
        "aria-pressed": "false",
        onclick: () => choosePreset(name),
      },
      el("strong", { text: titleCase(name) }),
      el("span", { text: known.get(name) || "" }),
    ),
  );
  const fieldset = el(
    "fieldset",
    { class: "preset-picker", id: "preset-picker" },
    el("legend", { text: "Look" }),
    el("div", { class: "preset-list" }, buttons),
    hidden,
  );
  queueMicrotask(() => choosePreset(initial));
  return fieldset;
}

function choosePreset(name) {
  const hidden = $("opt-preset");
  if (!hidden) return;
  hidden.value = name;
  for (const button of document.querySelectorAll("#preset-picker .preset")) {
    button.setAttribute("aria-pressed", String(button.dataset.preset === name));
  }
  updateLayerHints();
}

function layerPicker(option) {
  const input = el("input", {
    id: "opt-layer",
    name: "layer",
    type: "text",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "the look's own layer",
  });
  input.addEventListener("input", markChosenLayer);
  return el(
    "fieldset",
    { class: "layer-picker", id: "layer-picker", "data-testid": "layer-picker" },
    el("legend", { text: "Layer" }),
    el(
      "div",
      { class: "layer-head" },
      el("label", { for: "opt-layer", class: "muted", text: "Chosen:" }),
      input,
      el("small", { class: "hint", text: `${option.help}.` }),
    ),
    el("div", { id: "layer-grid", class: "layer-grid", role: "group", "aria-label": "Layers" }),
  );
}

function currentNetwork() {
  const select = $("opt-network");
  return (select && select.value) || "lite0";
}

async function loadLayers(network) {
  const grid = $("layer-grid");
  if (!grid) return;
  const ticket = ++state.layerRequest;
  grid.replaceChildren(el("p", { class: "muted", text: "Loading the layers…" }));
  let data;
  try {
    data = await api(`/api/layers?network=${encodeURIComponent(network)}`);
  } catch (error) {
    if (ticket === state.layerRequest) grid.replaceChildren(el("p", { class: "alert", text: error.message }));
    return;
  }
  if (ticket !== state.layerRequest || !$("layer-grid")) return;
  state.presetLayers = data.preset_layers || {};
  const input = $("opt-layer");
  if (input.value && !data.layers.some((layer) => layer.name === input.value) && !input.value.includes("+")) {
    input.value = ""; // that layer is not in this network
  }
  const auto = el(
    "button",
    { type: "button", class: "layer-tile auto", "data-layer": "", "aria-pressed": "false", onclick: () => chooseLayer("") },
    el("span", { class: "no-thumb", text: "Auto" }),
    el("span", { class: "layer-name", text: "The look's layer" }),
    el("span", { class: "layer-desc", id: "auto-layer-desc" }),
  );
  const tiles = data.layers.map((layer) =>
    el(
      "button",
      {
        type: "button",
        class: "layer-tile",
        "data-layer": layer.name,
        "aria-pressed": "false",
        title: `${layer.name}: ${layer.description} (${layer.channels} channels)`,
        onclick: () => chooseLayer(layer.name),
      },
      layer.thumbnail
        ? el("img", { src: layer.thumbnail, alt: "", class: "thumb" })
        : el("span", { class: "no-thumb", text: `${layer.channels} ch` }),
      el("span", { class: "layer-name", text: layer.name }),
      el("span", { class: "layer-desc", text: layer.description }),
    ),
  );
  grid.replaceChildren(auto, ...tiles);
  updateLayerHints();
  markChosenLayer();
}

function chooseLayer(name) {
  const input = $("opt-layer");
  input.value = input.value === name ? "" : name;
  markChosenLayer();
}

function markChosenLayer() {
  const value = ($("opt-layer")?.value || "").trim().toLowerCase();
  for (const tile of document.querySelectorAll("#layer-grid .layer-tile")) {
    tile.setAttribute("aria-pressed", String(tile.dataset.layer.toLowerCase() === value));
  }
}

function updateLayerHints() {
  const desc = $("auto-layer-desc");
  if (!desc || !state.presetLayers) return;
  const preset = $("opt-preset")?.value || "default";
  const layer = state.presetLayers[preset];
  desc.textContent = layer ? `${preset}: ${layer}` : "";
}

// ------------------------------------------------------------------------------------------------ the photo

function bindPhoto() {
  const input = $("image-input");
  const zone = $("drop-zone");
  input.addEventListener("change", photoChosen);
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      photoChosen();
    }
  });
}

function photoChosen() {
  const input = $("image-input");
  const preview = $("chosen-preview");
  const file = input.files[0];
  showAlert($("form-error"), "");
  if (state.chosenUrl) URL.revokeObjectURL(state.chosenUrl);
  state.chosenUrl = null;
  preview.hidden = true;
  $("chosen-name").textContent = "";
  $("drop-zone").classList.toggle("has-file", Boolean(file));
  if (!file) return;
  const limit = state.limits.max_upload_mb;
  if (limit && file.size > limit * 2 ** 20) {
    showAlert(
      $("form-error"),
      `That file is ${(file.size / 2 ** 20).toFixed(1)} MB; the limit is ${limit} MB. Send a smaller photo.`,
    );
    input.value = "";
    $("drop-zone").classList.remove("has-file");
    return;
  }
  $("chosen-name").textContent = file.name;
  state.chosenUrl = URL.createObjectURL(file);
  preview.onload = () => (preview.hidden = false);
  preview.onerror = () => (preview.hidden = true); // not a picture the browser can show: the server will say why
  preview.src = state.chosenUrl;
}

// ------------------------------------------------------------------------------------------------ submitting

async function submitDream(event) {
  event.preventDefault();
  const spec = state.mode;
  if (!spec) return;
  const form = $("dream-form");
  const data = new FormData(form);
  data.set("mode", spec.mode);
  if (!spec.needs_image) data.delete("image");
  if (!spec.subject) data.delete("subject");
  for (const [key, value] of [...data.entries()]) {
    if (typeof value === "string" && value.trim() === "") data.delete(key);
  }
  const name = $("display-name").value.trim();
  try {
    localStorage.setItem("dreambot-name", name);
  } catch {
    // private windows may refuse; the name is only a convenience
  }
  const button = $("dream-button");
  button.disabled = true;
  button.textContent = "Sending…";
  showAlert($("form-error"), "");
  try {
    const view = await api("/api/jobs", { method: "POST", body: data });
    startJob(view);
  } catch (error) {
    showAlert($("form-error"), error.message);
  } finally {
    button.disabled = false;
    button.textContent = "Dream";
  }
}

async function dreamAgain(id, alertBox) {
  showAlert(alertBox, "");
  try {
    const view = await api(jobUrl(id, "/again"), { method: "POST" });
    startJob(view);
    return true;
  } catch (error) {
    showAlert(alertBox, error.message);
    return false;
  }
}

// ------------------------------------------------------------------------------------------------ the job card

function startJob(view) {
  stopFollowing();
  state.job = view;
  state.previewBusy = false;
  const card = $("job-card");
  card.hidden = false;
  $("job-result").hidden = true;
  $("job-preview").hidden = true;
  $("job-preview").removeAttribute("src");
  $("result-image").removeAttribute("src");
  showAlert($("job-error"), "");
  renderJob(view);
  card.scrollIntoView({ behavior: "smooth", block: "start" });
  if (!FINISHED.has(view.state)) follow(view.id);
}

function follow(id) {
  if (!("EventSource" in window)) {
    poll(id);
    return;
  }
  const stream = new EventSource(jobUrl(id, "/events"));
  state.stream = stream;
  stream.onmessage = (event) => {
    if (state.stream !== stream) return;
    const view = JSON.parse(event.data);
    renderJob(view);
    if (FINISHED.has(view.state)) stopFollowing();
  };
  stream.onerror = () => {
    if (state.stream !== stream) return;
    stream.close();
    state.stream = null;
    if (!FINISHED.has(state.job.state)) poll(id); // a proxy that buffers, or a dropped connection
  };
}

function poll(id, delay = POLL_MS) {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(async () => {
    if (!state.job || state.job.id !== id) return;
    try {
      const view = await api(jobUrl(id));
      if (!state.job || state.job.id !== id) return;
      renderJob(view);
      if (!FINISHED.has(view.state)) poll(id);
    } catch (error) {
      if (error.status === 404) showAlert($("job-error"), error.message);
      else poll(id, delay * 2);
    }
  }, delay);
}

function stopFollowing() {
  if (state.stream) state.stream.close();
  state.stream = null;
  clearTimeout(state.pollTimer);
}

function statusLine(view) {
  switch (view.state) {
    case "queued": {
      const ahead = view.position || 0;
      const place = ahead === 0 ? "You're next" : `${ahead} ahead of you`;
      return view.eta_seconds ? `${place}, ${about(view.eta_seconds)}.` : `${place}.`;
    }
    case "running":
      return "Dreaming…";
    case "done":
      if (view.cached) return "Done: this was dreamed before, so here it is again.";
      return view.result && view.result.seconds ? `Done in ${number(view.result.seconds)} s.` : "Done.";
    case "failed":
      return "That dream did not work out.";
    case "cancelled":
      return "Cancelled.";
    default:
      return view.state;
  }
}

function renderJob(view) {
  if (state.job && state.job.id !== view.id) return;
  state.job = view;
  const card = $("job-card");
  card.dataset.state = view.state;
  card.dataset.jobId = view.id;
  $("job-title").textContent = view.subject ? `${titleCase(view.mode)}: ${view.subject}` : titleCase(view.mode);
  $("job-status").textContent = statusLine(view);
  const finished = FINISHED.has(view.state);
  const percent = view.state === "done" ? 100 : Math.round((view.progress || 0) * 100);
  $("job-progress-bar").style.width = `${percent}%`;
  $("job-progress").setAttribute("aria-valuenow", String(percent));
  $("job-progress").hidden = view.state === "failed" || view.state === "cancelled";
  $("job-progress-text").textContent =
    view.state === "running" ? `${percent}%${view.progress_text ? ` · ${view.progress_text}` : ""}` : "";
  $("cancel-button").hidden = finished;
  if (view.state === "running" && view.has_preview) refreshPreview(view.id);
  if (finished) $("job-preview").hidden = true;
  if (view.state === "failed") showAlert($("job-error"), view.error || "Something went wrong; please try again.");
  if (view.state === "done" && view.result) {
    showResult(view);
    loadGallery();
  }
}

function refreshPreview(id) {
  if (state.previewBusy) return; // the next update will fetch the newest one
  const preview = $("job-preview");
  state.previewBusy = true;
  preview.onload = () => {
    state.previewBusy = false;
    if (state.job && state.job.id === id && state.job.state === "running") preview.hidden = false;
  };
  preview.onerror = () => {
    state.previewBusy = false;
  };
  preview.src = `${jobUrl(id, "/preview.jpg")}?v=${++state.previewTick}`;
}

function settingsText(view) {
  return JSON.stringify(
    { mode: view.mode, subject: view.subject || undefined, options: view.options, settings: view.result.settings },
    null,
    2,
  );
}

function downloadName(view) {
  const extension = view.result.key.split(".").pop();
  return `dream-${view.mode}-${view.id}.${extension}`;
}

function showResult(view) {
  const url = fileUrl(view.result.key);
  const image = $("result-image");
  if (image.getAttribute("src") !== url) image.src = url;
  image.alt = view.result.caption || "The finished dream";
  image.width = view.result.width;
  image.height = view.result.height;
  $("result-caption").textContent = view.result.caption || "";
  $("result-settings-json").textContent = settingsText(view);
  const link = $("download-link");
  link.href = url;
  link.download = downloadName(view);
  $("job-result").hidden = false;
}

// ------------------------------------------------------------------------------------------------ the gallery

async function loadGallery() {
  let data;
  try {
    data = await api("/api/gallery");
  } catch {
    return; // the gallery is a nicety: the form still works
  }
  const items = data.jobs.filter((view) => view.result && view.result.key);
  $("gallery-empty").hidden = items.length > 0;
  $("gallery-grid").replaceChildren(
    ...items.map((view) =>
      el(
        "div",
        { class: view.schedule ? "gallery-cell featured" : "gallery-cell" },
        el(
          "button",
          {
            type: "button",
            class: "gallery-item",
            "data-job-id": view.id,
            title: view.result.caption,
            onclick: () => openViewer(view),
          },
          el("img", { src: fileUrl(view.result.key), alt: view.result.caption || view.mode, loading: "lazy" }),
          el("span", {
            class: "gallery-label",
            text: view.schedule
              ? `${view.schedule} · ${view.subject || view.mode}`
              : view.subject
                ? `${view.mode} · ${view.subject}`
                : view.mode,
          }),
        ),
        likeButton(view),
      ),
    ),
  );
}

function likeButton(view) {
  const button = el("button", {
    type: "button",
    class: "like-button",
    "data-testid": "like",
    title: "Like this dream",
    text: `♥ ${view.likes || 0}`,
  });
  button.onclick = async () => {
    try {
      const answer = await api(`/api/jobs/${view.id}/like`, { method: "POST" });
      button.textContent = `♥ ${answer.likes}`;
    } catch {
      // a like that did not land is no reason to interrupt anyone
    }
  };
  return button;
}

function openViewer(view) {
  const dialog = $("viewer");
  $("viewer-image").src = fileUrl(view.result.key);
  $("viewer-image").alt = view.result.caption || "";
  $("viewer-caption").textContent = view.result.caption || "";
  const when = new Date(view.created_at * 1000).toLocaleString();
  $("viewer-meta").textContent = `By ${view.requester || "someone"} on ${view.platform}, ${when}.`;
  $("viewer-settings").textContent = settingsText(view);
  $("viewer-download").href = fileUrl(view.result.key);
  $("viewer-download").download = downloadName(view);
  $("viewer-again").onclick = async () => {
    if (await dreamAgain(view.id, $("viewer-error"))) dialog.close();
  };
  showAlert($("viewer-error"), "");
  if (typeof dialog.showModal === "function") dialog.showModal();
  else dialog.setAttribute("open", "");
}

// ------------------------------------------------------------------------------------------------ start

async function start() {
  bindPhoto();
  $("dream-form").addEventListener("submit", submitDream);
  $("cancel-button").addEventListener("click", async () => {
    if (!state.job) return;
    try {
      renderJob(await api(jobUrl(state.job.id, "/cancel"), { method: "POST" }));
    } catch (error) {
      showAlert($("job-error"), error.message);
    }
  });
  $("again-button").addEventListener("click", () => state.job && dreamAgain(state.job.id, $("job-error")));
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) $("viewer").close(); // a click on the backdrop
  });
  try {
    $("display-name").value = localStorage.getItem("dreambot-name") || "";
  } catch {
    // no storage: no remembered name
  }
  loadGallery();
  let data;
  try {
    data = await api("/api/modes");
  } catch (error) {
    showAlert($("form-error"), error.message);
    return;
  }
  Object.assign(state, { modes: data.modes, presets: data.presets, networks: data.networks, limits: data.limits });
  if (state.limits.max_upload_mb) $("drop-limits").textContent = `PNG, JPEG, WebP or GIF, up to ${state.limits.max_upload_mb} MB`;
  buildTabs();
  selectMode(location.hash.slice(1) || "dream");
  document.body.dataset.ready = "true";
}

start();
