/* flextrain web page: a client of the REST API only (fetch + bearer token).
 *
 * Views are chosen by the URL hash: #/ (jobs and hardware), #/new (new job),
 * #/jobs/<id> (one job, live). The new-job form is built from the API's own
 * OpenAPI schema of AdvancedTrainingConfig, so every knob the server accepts
 * appears here with its default and description; GROUPS only orders them.
 */
"use strict";

(() => {
  const TOKEN_KEY = "flextrain.token";
  const REFRESH_MS = 2000;
  const RECONNECT_MS = 2000;
  const JOBS_PER_PAGE = 20;
  const CHECKPOINTS_REFRESH_MS = 10000;
  const FINISHED = new Set(["completed", "failed", "cancelled", "interrupted"]);
  // Ended without finishing: POST .../resume continues these from their latest checkpoint.
  const RESUMABLE = new Set(["failed", "cancelled", "interrupted"]);

  // Basic mode shows the seed's table; advanced mode shows every field of the schema.
  const BASIC_GROUPS = [
    ["What to train", ["model_id", "dataset_id", "training_type", "preset", "run_name"]],
    [
      "Training",
      [
        "num_epochs",
        "learning_rate",
        "batch_size",
        "max_length",
        "use_mixed_precision",
        "gradient_checkpointing",
      ],
    ],
  ];
  const ADVANCED_GROUPS = [
    ["What to train", ["model_id", "dataset_id", "training_type", "preset", "run_name"]],
    [
      "Length and batches",
      [
        "num_epochs",
        "max_steps",
        "batch_size",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "max_length",
      ],
    ],
    [
      "Optimizer",
      [
        "learning_rate",
        "optim",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "label_smoothing_factor",
      ],
    ],
    ["Learning-rate schedule", ["lr_scheduler_type", "warmup_steps", "warmup_ratio"]],
    ["Precision and memory", ["use_mixed_precision", "fp16", "bf16", "gradient_checkpointing"]],
    ["LoRA", ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"]],
    [
      "Evaluation, logging and checkpoints",
      [
        "eval_split",
        "eval_file",
        "eval_strategy",
        "eval_steps",
        "evaluate_before_training",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "output_dir",
      ],
    ],
    ["Data preparation", ["completion_only_loss"]],
    ["Runtime", ["seed", "dataloader_num_workers", "num_threads"]],
    [
      "Several processes and machines",
      [
        "num_processes",
        "num_nodes",
        "distributed_strategy",
        "rdzv_endpoint",
        "distributed_timeout",
        "deepspeed_config",
      ],
    ],
  ];
  const LABELS = {
    model_id: "Model",
    dataset_id: "Dataset",
    training_type: "Training type",
    preset: "Preset",
    run_name: "Run name",
    num_epochs: "Epochs",
    learning_rate: "Learning rate",
    batch_size: "Batch size",
    max_length: "Max length (tokens)",
    use_mixed_precision: "Mixed precision",
    gradient_checkpointing: "Gradient checkpointing",
    lr_scheduler_type: "LR scheduler",
    optim: "Optimizer",
    lora_r: "LoRA rank (r)",
    lora_alpha: "LoRA alpha",
    lora_dropout: "LoRA dropout",
    lora_target_modules: "LoRA target modules",
    fp16: "fp16",
    bf16: "bf16",
    eval_strategy: "Evaluation strategy",
  };
  const TYPE_LABELS = {
    fine_tuning: "Fine-tuning",
    lora_adaptation: "LoRA adaptation",
    continued_pretraining: "Continued pre-training",
    task_specific: "Task-specific (classification)",
    full_training: "Full training",
  };
  // The knobs a preset fills (config/presets.py); the API does not list them.
  const PRESET_KNOBS = ["num_epochs", "learning_rate", "batch_size", "max_length"];
  const EVENT_LABELS = {
    interrupted: "Interrupted",
    resumed: "Resumed",
    resume_failed: "Resume failed",
    memory_warning: "Memory warning",
    early_stopped: "Stopped early",
  };
  // The latest logged value of each, shown next to the loss: [metric key, label, testid, format].
  const RATE_FACTS = [
    ["tokens_per_second", "Tokens/s", "fact-tokens-per-second", formatRate],
    ["rss_gb", "Memory (RSS)", "fact-memory", formatGB],
  ];
  const MEMORY_PARTS = [
    ["weights_gb", "Weights"],
    ["gradients_gb", "Gradients"],
    ["optimizer_gb", "Optimizer state"],
    ["activations_gb", "Activations"],
    ["logits_gb", "Logits"],
    ["baseline_gb", "Runtime baseline"],
  ];

  const state = {
    auth: true,
    user: null,
    timers: [],
    jobsOffset: 0,
    jobsRows: new Map(),
    form: null, // {fields: Map(name -> descriptor), basicNames: Set, ready: Promise}
    models: [],
    datasets: [],
    job: null,
    stream: null, // AbortController of the job's event stream
    series: null,
    rates: {}, // metric key -> latest logged value (RATE_FACTS)
    timeline: new Map(), // event id -> JobEvent of the job shown
    drawPending: false,
  };

  const $ = (id) => document.getElementById(id);

  /** replaceChildren that skips null/false children (optional parts of a view). */
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  /** Create an element; attrs go to properties (className, hidden, ...) or attributes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className" || key === "textContent" || key === "value") node[key] = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, detail, errors) {
      super(detail);
      this.status = status;
      this.detail = detail;
      this.errors = errors || [];
    }
  }

  function authHeaders() {
    const token = localStorage.getItem(TOKEN_KEY);
    return state.auth && token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function errorFrom(resp) {
    let body = null;
    try {
      body = await resp.json();
    } catch {
      body = null;
    }
    const detail =
      body && typeof body.detail === "string" ? body.detail : `${resp.status} ${resp.statusText}`;
    return new ApiError(resp.status, detail, body && Array.isArray(body.errors) ? body.errors : []);
  }

  async function api(path, { method = "GET", body, signal, quiet401 = false } = {}) {
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, `Cannot reach the server: ${err.message}`, []);
    }
    if (!resp.ok) {
      const err = await errorFrom(resp);
      if (resp.status === 401 && !quiet401) signedOut(err.detail);
      throw err;
    }
    return resp.status === 204 ? null : resp.json();
  }

  // ---------------------------------------------------------------- formatting

  function parseTime(value) {
    if (!value) return null;
    // The store returns naive UTC timestamps from SQLite; read them as UTC.
    const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function formatTime(value) {
    const date = parseTime(value);
    return date ? date.toLocaleString() : "—";
  }

  function formatNumber(value, digits = 4) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString();
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
    return Number(value.toPrecision(digits)).toString();
  }

  function formatGB(gb) {
    if (gb === null || gb === undefined) return "—";
    if (gb < 0.001) return `${(gb * 1024 * 1024).toFixed(0)} KB`;
    if (gb < 1) return `${(gb * 1024).toFixed(1)} MB`;
    return `${gb.toFixed(gb < 10 ? 2 : 1)} GB`;
  }

  function formatBytes(bytes) {
    return bytes === null || bytes === undefined ? "—" : formatGB(bytes / 1024 ** 3);
  }

  function formatRate(value) {
    if (value === null || value === undefined) return "—";
    return value >= 100 ? Math.round(value).toLocaleString() : formatNumber(value, 3);
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 0.1) return "under 0.1 s";
    if (seconds < 10) return `${seconds.toFixed(1)} s`;
    if (seconds < 60) return `${Math.round(seconds)} s`;
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    return `${hours} h ${minutes % 60} min`;
  }

  function statusBadge(status, why) {
    // A queued job's badge says why it waits (the scheduler's reason) on hover.
    const attrs = { className: `status status-${status}` };
    if (why) attrs.title = why;
    return el("span", attrs, status || "—");
  }

  function progressBar(fraction, label) {
    const percent = Math.max(0, Math.min(100, Math.round((fraction || 0) * 100)));
    const bar = el(
      "div",
      {
        className: "progress",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": percent,
        "aria-label": label || `${percent}% done`,
      },
      el("div", { className: "progress-fill", style: `width: ${percent}%` }),
    );
    return el("div", { className: "progress-line" }, bar, el("span", { className: "small" }, `${percent}%`));
  }

  // ---------------------------------------------------------------- sign-in

  async function boot() {
    $("logout").addEventListener("click", logout);
    $("login-form").addEventListener("submit", login);
    $("jobs-filter").addEventListener("change", () => {
      state.jobsOffset = 0;
      loadJobs();
    });
    $("jobs-prev").addEventListener("click", () => {
      state.jobsOffset = Math.max(0, state.jobsOffset - JOBS_PER_PAGE);
      loadJobs();
    });
    $("jobs-next").addEventListener("click", () => {
      state.jobsOffset += JOBS_PER_PAGE;
      loadJobs();
    });
    $("job-cancel").addEventListener("click", cancelJob);
    $("job-resume").addEventListener("click", resumeJob);
    $("job-form").addEventListener("submit", submitJob);
    $("job-form").addEventListener("input", markCheckStale);
    $("job-form").addEventListener("change", markCheckStale);
    $("check-button").addEventListener("click", checkJob);
    $("expert-check").addEventListener("click", () => checkExpertYaml().catch(() => {}));
    for (const radio of document.querySelectorAll('input[name="mode"]')) {
      radio.addEventListener("change", () => layoutForm());
    }
    window.addEventListener("hashchange", route);
    window.addEventListener("resize", scheduleDraw);

    let health;
    try {
      health = await api("/api/health");
    } catch (err) {
      $("boot-message").textContent = `The server did not answer: ${err.detail || err.message}`;
      return;
    }
    state.auth = health.auth;
    if (!state.auth || localStorage.getItem(TOKEN_KEY)) {
      try {
        await enter();
        return;
      } catch (err) {
        showLogin(err.detail);
        return;
      }
    }
    showLogin();
  }

  async function enter() {
    const me = await api("/api/me", { quiet401: true });
    state.user = me;
    $("boot-message").hidden = true;
    $("login-view").hidden = true;
    $("nav").hidden = false;
    $("user-box").hidden = false;
    $("user-name").textContent = me.name;
    $("user-role").textContent = state.auth ? me.role : `${me.role} · auth off`;
    $("logout").hidden = !state.auth;
    route();
  }

  function showLogin(message) {
    stopLive();
    state.user = null;
    $("boot-message").hidden = true;
    for (const view of document.querySelectorAll(".view")) view.hidden = true;
    $("nav").hidden = true;
    $("user-box").hidden = true;
    $("login-view").hidden = false;
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("login-token").setAttribute("aria-invalid", message ? "true" : "false");
    $("login-token").focus();
  }

  async function login(event) {
    event.preventDefault();
    const token = $("login-token").value.trim();
    if (!token) {
      showLogin("Enter your token.");
      return;
    }
    localStorage.setItem(TOKEN_KEY, token);
    const button = event.submitter || $("login-form").querySelector("button");
    button.disabled = true;
    try {
      await enter();
      $("login-token").value = "";
    } catch (err) {
      localStorage.removeItem(TOKEN_KEY);
      showLogin(err.detail || String(err));
    } finally {
      button.disabled = false;
    }
  }

  function logout() {
    localStorage.removeItem(TOKEN_KEY);
    showLogin();
  }

  function signedOut(detail) {
    if (!state.user || !state.auth) return;
    localStorage.removeItem(TOKEN_KEY);
    showLogin(`Signed out: ${detail}`);
  }

  // ---------------------------------------------------------------- routing

  function stopLive() {
    for (const timer of state.timers) clearInterval(timer);
    state.timers = [];
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  function every(ms, fn) {
    state.timers.push(setInterval(fn, ms));
  }

  function showView(name) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `${name}-view`;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function route() {
    if (!state.user) return;
    stopLive();
    const hash = location.hash || "#/";
    const match = hash.match(/^#\/jobs\/([A-Za-z0-9_-]+)$/);
    if (hash === "#/new") showNew();
    else if (match) showJob(match[1]);
    else showJobs();
  }

  // ---------------------------------------------------------------- hardware and jobs

  async function loadHardware() {
    const body = $("hardware-body");
    let hw;
    try {
      hw = await api("/api/training/hardware");
    } catch (err) {
      body.replaceChildren(el("p", { className: "form-error" }, err.detail));
      return;
    }
    const tile = (label, value, testid) =>
      el("div", { className: "tile", "data-testid": testid }, el("dt", {}, label), el("dd", {}, value));
    const gpus = hw.gpus.length
      ? hw.gpus.map((g) => `${g.name} (${formatGB(g.free_memory_gb)} free of ${formatGB(g.total_memory_gb)})`).join("; ")
      : "None";
    body.replaceChildren(
      el(
        "dl",
        { className: "tiles" },
        tile("CPU cores", String(hw.cpu_cores), "hw-cpu"),
        tile("Memory free", `${formatGB(hw.available_memory_gb)} of ${formatGB(hw.total_memory_gb)}`, "hw-memory"),
        tile("GPUs", hw.gpu_count ? `${hw.gpu_count}: ${gpus}` : "None (CPU training)", "hw-gpus"),
        tile("GPU memory free", hw.gpu_count ? formatGB(hw.available_gpu_memory_gb) : "—", "hw-gpu-memory"),
        tile("Precision", `${hw.recommended_precision}${hw.supports_bf16 ? " (bf16 supported)" : ""}`, "hw-precision"),
        tile("Disk free", formatGB(hw.disk_free_gb), "hw-disk"),
        tile("Platform", hw.platform || "—", "hw-platform"),
      ),
    );
  }

  function showJobs() {
    showView("jobs");
    loadHardware();
    loadJobs();
    every(REFRESH_MS, loadJobs);
  }

  function jobCells(job) {
    const name = job.run_name ? `${job.run_name} (${job.job_id})` : job.job_id;
    return [
      el("td", {}, el("a", { href: `#/jobs/${job.job_id}`, "data-testid": "job-link" }, name)),
      el("td", {}, job.model_id),
      el("td", { className: "opt" }, job.dataset_id),
      el("td", { className: "opt" }, TYPE_LABELS[job.training_type] || job.training_type),
      el("td", { "data-testid": "job-row-status" }, statusBadge(job.status, job.status === "queued" ? job.wait_reason : null)),
      el("td", { className: "progress-cell" }, progressBar(job.progress, `Progress of ${job.job_id}`)),
      el("td", { className: "nowrap opt" }, formatTime(job.created_at)),
    ];
  }

  async function loadJobs() {
    const status = $("jobs-filter").value;
    const query = new URLSearchParams({ limit: JOBS_PER_PAGE, offset: state.jobsOffset });
    if (status) query.set("status", status);
    let page;
    try {
      page = await api(`/api/training/jobs?${query}`);
    } catch (err) {
      $("jobs-error").textContent = err.detail || String(err);
      $("jobs-error").hidden = false;
      return;
    }
    $("jobs-error").hidden = true;
    if (page.items.length === 0 && state.jobsOffset > 0) {
      state.jobsOffset = Math.max(0, state.jobsOffset - JOBS_PER_PAGE);
      return loadJobs();
    }
    const tbody = $("jobs-body");
    const ids = page.items.map((j) => j.job_id);
    const sameOrder =
      ids.length === tbody.rows.length && ids.every((id, i) => tbody.rows[i].dataset.jobId === id);
    if (sameOrder) {
      // Update cells in place so a focused link keeps its focus between refreshes.
      page.items.forEach((job, i) => {
        const row = tbody.rows[i];
        const fresh = jobCells(job);
        for (const index of [4, 5]) row.cells[index].replaceWith(fresh[index]);
      });
    } else {
      tbody.replaceChildren(
        ...page.items.map((job) => {
          const row = el("tr", { "data-job-id": job.job_id, "data-testid": "job-row" }, ...jobCells(job));
          row.addEventListener("click", (event) => {
            if (event.target.closest("a")) return;
            location.hash = `#/jobs/${job.job_id}`;
          });
          return row;
        }),
      );
    }
    $("jobs-empty").hidden = page.total > 0;
    $("jobs-table").hidden = page.total === 0;
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.items.length;
    $("jobs-range").textContent = page.total ? `${first}–${last} of ${page.total}` : "";
    $("jobs-prev").disabled = page.offset === 0;
    $("jobs-next").disabled = last >= page.total;
  }

  // ---------------------------------------------------------------- the new-job form

  function resolveRef(spec, ref) {
    return ref.split("/").slice(1).reduce((node, key) => node[key], spec);
  }

  /** What kind of input a schema property needs, from the server's OpenAPI schema. */
  function describeField(spec, schema, name) {
    const prop = schema.properties[name];
    const field = {
      name,
      label: LABELS[name] || prop.title || name,
      description: prop.description || "",
      default: prop.default,
      required: (schema.required || []).includes(name),
      kind: "text",
      choices: null,
      suggestions: null,
    };
    for (let variant of prop.anyOf || [prop]) {
      if (variant.$ref) variant = resolveRef(spec, variant.$ref);
      if (variant.enum) {
        field.kind = "select";
        field.choices = variant.enum;
      } else if (variant.type === "boolean") field.kind = "bool";
      else if (variant.type === "integer") field.kind = "int";
      else if (variant.type === "number") field.kind = "float";
      else if (variant.type === "array") field.kind = "list";
    }
    const oneOf = field.description.match(/One of: (.+?)\.?$/);
    if (oneOf) field.suggestions = oneOf[1].split(",").map((s) => s.trim());
    return field;
  }

  function defaultText(field) {
    if (field.default === undefined) return field.required ? "required" : "none";
    if (field.default === null) return "none";
    if (field.kind === "bool") return field.default ? "on" : "off";
    if (Array.isArray(field.default)) return field.default.join(", ");
    return String(field.default);
  }

  function buildInput(field) {
    const id = `f-${field.name}`;
    const common = {
      id,
      name: field.name,
      "data-testid": `field-${field.name}`,
      "aria-describedby": `help-${field.name} err-${field.name}`,
    };
    if (field.kind === "select" || field.kind === "bool") {
      const select = el("select", common);
      const blank = field.required ? "Choose…" : `Default (${defaultText(field)})`;
      select.append(el("option", { value: "" }, blank));
      const choices = field.kind === "bool" ? ["true", "false"] : field.choices;
      for (const choice of choices) {
        const label =
          field.kind === "bool"
            ? choice === "true"
              ? "On"
              : "Off"
            : TYPE_LABELS[choice] || choice;
        select.append(el("option", { value: choice }, label));
      }
      if (field.required) select.required = true;
      return select;
    }
    const input = el("input", {
      ...common,
      type: "text",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: field.required ? "required" : defaultText(field),
      inputmode: field.kind === "int" ? "numeric" : field.kind === "float" ? "decimal" : null,
      required: field.required,
    });
    const listId = { model_id: "models-list", dataset_id: "datasets-list" }[field.name];
    if (listId) input.setAttribute("list", listId);
    else if (field.suggestions) input.setAttribute("list", `list-${field.name}`);
    return input;
  }

  function buildField(field) {
    const input = buildInput(field);
    const help = field.description
      ? `${field.description}${field.required ? "" : ` Default: ${defaultText(field)}.`}`
      : field.required
        ? ""
        : `Default: ${defaultText(field)}.`;
    const wrapper = el(
      "div",
      { className: "field", "data-field": field.name },
      el("label", { for: input.id }, field.label, field.required ? el("span", { "aria-hidden": "true", className: "req" }, " *") : null),
      input,
      field.suggestions
        ? el("datalist", { id: `list-${field.name}` }, ...field.suggestions.map((s) => el("option", { value: s })))
        : null,
      el("p", { className: "help", id: `help-${field.name}` }, help),
      el("p", { className: "field-error", id: `err-${field.name}`, "data-testid": `err-${field.name}`, hidden: true }),
    );
    field.wrapper = wrapper;
    field.input = input;
    return wrapper;
  }

  async function loadForm() {
    const resp = await fetch("/openapi.json");
    if (!resp.ok) throw new Error(`could not read /openapi.json (${resp.status})`);
    const spec = await resp.json();
    const schemas = spec.components.schemas;
    const advanced = schemas.AdvancedTrainingConfig;
    const basic = schemas.BasicTrainingConfig;
    const fields = new Map();
    for (const name of Object.keys(advanced.properties)) {
      const field = describeField(spec, advanced, name);
      buildField(field);
      fields.set(name, field);
    }
    const form = {
      fields,
      basicNames: new Set(Object.keys(basic.properties)),
      modelsList: el("datalist", { id: "models-list" }),
      datasetsList: el("datalist", { id: "datasets-list" }),
    };
    fields.get("model_id").input.addEventListener("input", describeChoice);
    fields.get("dataset_id").input.addEventListener("input", describeChoice);
    fields.get("preset")?.input.addEventListener("change", () => presetPlaceholders(form));
    fields.get("training_type")?.input.addEventListener("change", () => presetPlaceholders(form));
    return form;
  }

  /** With a preset chosen, a blank knob it fills says so instead of showing the default. */
  function presetPlaceholders(form) {
    const preset = form.fields.get("preset")?.input.value;
    const type = form.fields.get("training_type")?.input.value;
    const values = (preset && state.presets?.[preset]?.[type]) || {};
    for (const name of PRESET_KNOBS) {
      const field = form.fields.get(name);
      if (!field) continue;
      const value = values[name] !== undefined ? `: ${values[name]}` : "";
      field.input.placeholder = preset ? `from preset '${preset}'${value}` : defaultText(field);
    }
  }

  function currentMode() {
    if ($("mode-expert").checked) return "expert";
    return $("mode-advanced").checked ? "advanced" : "basic";
  }

  /** Place the fields into the current mode's groups; a field keeps its value across modes. */
  function layoutForm() {
    const form = state.form;
    if (!form) return;
    const mode = currentMode();
    const full = mode !== "basic"; // expert mode has every advanced field too
    const groups = full ? ADVANCED_GROUPS : BASIC_GROUPS;
    const placed = new Set();
    const sets = [];
    for (const [title, names] of groups) {
      const present = names.filter((n) => form.fields.has(n) && (full || form.basicNames.has(n)));
      if (!present.length) continue;
      present.forEach((n) => placed.add(n));
      sets.push([title, present]);
    }
    $("expert-section").hidden = mode !== "expert";
    if (full) {
      // A knob the server added that GROUPS does not know yet still gets a place.
      const others = [...form.fields.keys()].filter((n) => !placed.has(n));
      if (others.length) sets.push(["Other", others]);
    }
    const container = $("job-fields");
    container.replaceChildren(
      form.modelsList,
      form.datasetsList,
      ...sets.map(([title, names], index) =>
        el(
          "fieldset",
          { className: "group", "data-testid": `group-${index}` },
          el("legend", {}, title),
          el("div", { className: "grid" }, ...names.map((n) => form.fields.get(n).wrapper)),
          title === "What to train" ? el("p", { id: "choice-info", className: "help", "aria-live": "polite" }) : null,
        ),
      ),
    );
    $("mode-help").textContent =
      mode === "expert"
        ? "Expert mode: every training knob, plus the loss, optimizer, schedule expression and hooks written as YAML below."
        : mode === "advanced"
          ? "Advanced mode: every training knob. Blank fields take the preset's value (if a preset is chosen) or the default shown in grey."
          : "Basic mode: choose a model, data and a preset. Blank fields take the preset's value, or the default shown in grey.";
    describeChoice();
  }

  function describeChoice() {
    const form = state.form;
    const info = $("choice-info");
    if (!form || !info) return;
    const modelId = form.fields.get("model_id").input.value.trim();
    const datasetId = form.fields.get("dataset_id").input.value.trim();
    const model = state.models.find((m) => m.model_id === modelId);
    const dataset = state.datasets.find((d) => d.dataset_id === datasetId);
    const parts = [];
    if (model) {
      const types = model.supported_training_types.map((t) => TYPE_LABELS[t] || t).join(", ");
      parts.push(`${model.model_id}: ${model.description}. Supports ${types}.`);
    }
    if (dataset) {
      const labels = dataset.labels.length ? `, labels ${dataset.labels.join("/")}` : "";
      parts.push(`${dataset.dataset_id}: ${dataset.num_rows} rows (${dataset.format}${labels}). ${dataset.description}`);
    }
    info.textContent = parts.join(" ");
    const select = form.fields.get("training_type").input;
    for (const option of select.options) {
      if (!option.value) continue;
      const supported = !model || model.supported_training_types.includes(option.value);
      option.disabled = !supported;
      const base = TYPE_LABELS[option.value] || option.value;
      option.textContent = supported ? base : `${base} (not supported by this model)`;
    }
  }

  async function loadChoices() {
    const form = state.form;
    try {
      state.datasets = await api("/api/datasets");
      form.datasetsList.replaceChildren(
        ...state.datasets.map((d) => el("option", { value: d.dataset_id }, d.description || d.dataset_id)),
      );
    } catch (err) {
      showFormErrors(err, "Could not list datasets: ");
    }
    try {
      state.presets = await api("/api/training/presets");
      presetPlaceholders(form);
    } catch (err) {
      showFormErrors(err, "Could not load the presets: ");
    }
    try {
      // The first call may build the tiny built-in models: it can take a few seconds.
      state.models = await api("/api/training/models/trainable");
      form.modelsList.replaceChildren(
        ...state.models.map((m) => el("option", { value: m.model_id }, m.description)),
      );
    } catch (err) {
      showFormErrors(err, "Could not list models: ");
    }
    describeChoice();
  }

  async function showNew() {
    showView("new");
    const canCreate = state.user.role !== "viewer";
    $("submit-button").disabled = !canCreate;
    $("form-status").textContent = canCreate
      ? ""
      : `Your role '${state.user.role}' can check a configuration but not create jobs.`;
    if (!state.form) {
      try {
        state.form = await loadForm();
      } catch (err) {
        $("job-fields").replaceChildren(el("p", { className: "form-error" }, `The form could not load: ${err.message}`));
        return;
      }
      layoutForm();
      loadChoices();
    }
  }

  /** The config the form describes: only fields shown in this mode and not left blank. */
  function collectConfig() {
    const form = state.form;
    const mode = currentMode();
    const config = {};
    for (const [name, field] of form.fields) {
      if (mode === "basic" && !form.basicNames.has(name)) continue;
      if (!field.wrapper.isConnected) continue;
      const raw = field.input.value.trim();
      if (raw === "") continue;
      if (field.kind === "bool") config[name] = raw === "true";
      else if (field.kind === "int" || field.kind === "float") {
        const number = Number(raw);
        // A non-number goes as typed, so the server names the field and says why.
        config[name] = Number.isFinite(number) ? number : raw;
      } else if (field.kind === "list") {
        config[name] = raw.split(",").map((s) => s.trim()).filter(Boolean);
      } else config[name] = raw;
    }
    return config;
  }

  function clearFormErrors() {
    $("form-errors").hidden = true;
    $("form-errors").replaceChildren();
    if (!state.form) return;
    for (const field of state.form.fields.values()) {
      field.input.removeAttribute("aria-invalid");
      const slot = field.wrapper.querySelector(".field-error");
      slot.textContent = "";
      slot.hidden = true;
    }
  }

  /** Show an API error: a summary that names each field, and each message by its field. */
  function showFormErrors(err, prefix = "") {
    const box = $("form-errors");
    const items = [];
    const seen = new Set();
    for (const e of err.errors || []) {
      const path = String(e.field || "").replace(/^config\./, "");
      const name = path.split(".")[0];
      const key = `${path}|${e.message}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const field = state.form && state.form.fields.get(name);
      const text = e.fix ? `${e.message} Fix: ${e.fix}` : e.message;
      if (field && field.wrapper.isConnected) {
        field.input.setAttribute("aria-invalid", "true");
        const slot = field.wrapper.querySelector(".field-error");
        slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
        slot.hidden = false;
      }
      const label = field ? `${field.label} (${path})` : path;
      items.push(
        el(
          "li",
          { "data-field": path },
          field && field.wrapper.isConnected ? el("a", { href: `#f-${name}`, onclick: focusField(name) }, label) : el("strong", {}, label),
          `: ${text}`,
        ),
      );
    }
    const summary = items.length
      ? `${prefix}${items.length === 1 ? "1 problem" : `${items.length} problems`} to fix:`
      : `${prefix}${err.detail || err.message || String(err)}`;
    fill(box, el("p", {}, summary), items.length ? el("ul", {}, ...items) : null);
    box.hidden = false;
    box.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  function focusField(name) {
    return (event) => {
      event.preventDefault();
      state.form.fields.get(name).input.focus();
    };
  }

  function setBusy(busy, message) {
    $("check-button").disabled = busy;
    $("submit-button").disabled = busy || state.user.role === "viewer";
    $("form-status").textContent = message || "";
  }

  async function checkJob() {
    if (!state.form) return;
    clearFormErrors();
    const config = collectConfig();
    setBusy(true, "Checking…");
    const result = $("check-result");
    try {
      const report = await api("/api/training/compatibility/check", {
        method: "POST",
        body: {
          model_id: config.model_id || "",
          training_type: config.training_type || null,
          dataset_id: config.dataset_id || null,
          config,
        },
      });
      renderCheck(report);
      result.dataset.stale = "false";
      result.hidden = false;
      result.scrollIntoView({ block: "start", behavior: "smooth" });
      setBusy(false, "");
    } catch (err) {
      setBusy(false, "");
      result.hidden = true;
      showFormErrors(err, "Check failed. ");
    }
  }

  function markCheckStale() {
    const result = $("check-result");
    if (result.hidden || result.dataset.stale === "true") return;
    result.dataset.stale = "true";
    $("check-body").prepend(
      el("p", { className: "stale-note", "data-testid": "check-stale" }, "The form changed since this check: press Check again."),
    );
  }

  function listBlock(title, items, className, testid) {
    if (!items || !items.length) return null;
    return el(
      "div",
      { className, "data-testid": testid },
      el("h3", {}, title),
      el("ul", {}, ...items.map((text) => el("li", {}, text))),
    );
  }

  function renderCheck(report) {
    const ok = report.is_compatible;
    const memory = report.memory;
    const time = report.time;
    const verdict = el(
      "p",
      { className: `verdict ${ok ? "verdict-ok" : "verdict-bad"}`, "data-testid": "check-verdict", "data-compatible": String(ok) },
      ok ? "✓ Compatible: this run can train here." : "✗ Not compatible as configured: see the issues below.",
    );
    const about = el(
      "p",
      { className: "muted" },
      [
        report.architecture,
        report.objective && `objective ${report.objective}`,
        report.num_parameters && `${report.num_parameters.toLocaleString()} parameters`,
        memory && `${memory.trainable_parameters.toLocaleString()} trainable`,
      ]
        .filter(Boolean)
        .join(" · "),
    );
    let memoryBlock = null;
    if (memory) {
      const peak = memory.peak_gb || 0;
      const share = memory.available_gb ? Math.min(1, peak / memory.available_gb) : 0;
      memoryBlock = el(
        "div",
        { className: "check-part", "data-testid": "check-memory" },
        el("h3", {}, `Memory (${memory.device === "cuda" ? "GPU" : "system RAM"}, ${memory.source})`),
        el(
          "table",
          { className: "kv" },
          el("tbody", {},
            ...MEMORY_PARTS.map(([key, label]) => el("tr", {}, el("th", { scope: "row" }, label), el("td", {}, formatGB(memory[key])))),
            el("tr", { className: "total" }, el("th", { scope: "row" }, "Peak"), el("td", {}, formatGB(peak))),
            el("tr", {}, el("th", { scope: "row" }, "Available"), el("td", {}, formatGB(memory.available_gb))),
          ),
        ),
        el(
          "div",
          { className: `meter ${memory.fits ? "" : "meter-over"}`, role: "img", "aria-label": `Peak uses ${Math.round(share * 100)}% of available memory` },
          el("div", { className: "meter-fill", style: `width: ${Math.max(1, share * 100)}%` }),
        ),
        el("p", { className: "small" }, memory.fits ? `Fits: peak is ${Math.round(share * 100)}% of what is available.` : "Does not fit in the memory available."),
        memory.notes.length ? el("ul", { className: "small" }, ...memory.notes.map((n) => el("li", {}, n))) : null,
      );
    }
    let timeBlock = null;
    if (time) {
      timeBlock = el(
        "div",
        { className: "check-part", "data-testid": "check-time" },
        el("h3", {}, "Estimated time"),
        el("p", { className: "big" }, formatSeconds(time.seconds)),
        el("p", { className: "small" }, `Likely between ${formatSeconds(time.low_seconds)} and ${formatSeconds(time.high_seconds)}; ` +
          `${time.optimizer_steps.toLocaleString()} optimizer steps, ${time.tokens_per_epoch.toLocaleString()} tokens per epoch ` +
          `over ${formatNumber(time.epochs)} epoch(s) (${time.source}).`),
        time.assumption ? el("p", { className: "small muted" }, time.assumption) : null,
      );
    }
    const details = (report.recommendation_details || []).map((rec) =>
      el(
        "li",
        {},
        `${rec.description} `,
        el("code", {}, Object.entries(rec.changes).map(([k, v]) => `${k}=${v}`).join(", ")),
        ` (peak ${formatGB(rec.peak_gb)}${rec.fits ? ", fits" : ", does not fit"}) `,
        el("button", { type: "button", className: "btn btn-small", onclick: () => applyChanges(rec.changes) }, "Apply"),
      ),
    );
    fill(
      $("check-body"),
      verdict,
      about,
      el("div", { className: "check-grid" }, memoryBlock, timeBlock),
      listBlock("Issues", report.issues, "error-box", "check-issues"),
      listBlock("Warnings", report.warnings, "warn-box", "check-warnings"),
      listBlock("Recommendations", report.recommendations, "info-box", "check-recommendations"),
      details.length ? el("div", { className: "info-box" }, el("h3", {}, "Suggested changes"), el("ul", {}, ...details)) : null,
    );
  }

  function applyChanges(changes) {
    const form = state.form;
    const names = Object.keys(changes).filter((n) => form.fields.has(n));
    if (names.some((n) => !form.basicNames.has(n)) && currentMode() === "basic") {
      $("mode-advanced").checked = true;
      layoutForm();
    }
    for (const name of names) {
      const value = changes[name];
      form.fields.get(name).input.value = Array.isArray(value) ? value.join(", ") : String(value);
    }
    $("form-status").textContent = `Applied: ${names.join(", ")}. Check again to see the effect.`;
  }

  /**
   * The expert YAML as config keys, checked by the server (the same rules as the job;
   * user code is read there, never run). Shows the problems and throws when there are any.
   */
  async function checkExpertYaml() {
    clearFormErrors();
    const status = $("expert-status");
    status.textContent = "Checking…";
    let result;
    try {
      result = await api("/api/training/expert/check", { method: "POST", body: { yaml: $("expert-yaml").value } });
    } catch (err) {
      status.textContent = "";
      showFormErrors(err, "The expert YAML has a problem. ");
      throw err;
    }
    if (result.issues.length) {
      status.textContent = "";
      const err = { detail: "The expert YAML has problems.", errors: result.issues };
      showFormErrors(err, "The expert YAML: ");
      throw err;
    }
    const keys = Object.keys(result.config);
    const notes = result.warnings.map((w) => `${w.field}: ${w.message}`).join(" ");
    status.textContent = `${keys.length ? `OK: ${keys.join(", ")}.` : "OK (no expert keys)."} ${notes}`.trim();
    return result.config;
  }

  async function submitJob(event) {
    event.preventDefault();
    if (!state.form) return;
    clearFormErrors();
    const mode = currentMode();
    let config = collectConfig();
    if (mode === "expert") {
      try {
        config = { ...config, ...(await checkExpertYaml()) };
      } catch {
        return;
      }
    }
    setBusy(true, "Creating the job…");
    let job;
    try {
      job = await api(`/api/training/jobs/${mode}`, { method: "POST", body: config });
    } catch (err) {
      setBusy(false, "");
      showFormErrors(err, "The job was not created. ");
      return;
    }
    setBusy(true, "Starting…");
    try {
      await api(`/api/training/jobs/${job.job_id}/start`, { method: "POST" });
    } catch (err) {
      setBusy(false, "");
      showFormErrors(err, `Job ${job.job_id} was created but did not start. `);
      return;
    }
    setBusy(false, "");
    location.hash = `#/jobs/${job.job_id}`;
  }

  // ---------------------------------------------------------------- one job

  function resetJobView(id) {
    $("job-title").textContent = `Job ${id}`;
    $("job-status").replaceChildren();
    $("job-status").removeAttribute("data-status");
    $("job-cancel").hidden = true;
    $("job-resume").hidden = true;
    $("job-error").hidden = true;
    $("job-warnings").hidden = true;
    $("job-model").hidden = true;
    $("job-facts").replaceChildren();
    $("job-config").replaceChildren();
    $("job-logs").textContent = "";
    $("job-stream-state").textContent = "";
    $("job-timeline").replaceChildren();
    $("job-timeline-empty").hidden = false;
    $("job-checkpoints-body").replaceChildren();
    $("job-checkpoints").hidden = true;
    $("job-checkpoints-summary").textContent = "";
    state.series = { loss: [], eval_loss: [], learning_rate: [] };
    state.rates = {};
    state.timeline = new Map();
    scheduleDraw();
  }

  async function showJob(id) {
    showView("job");
    state.job = null;
    resetJobView(id);
    let job;
    try {
      job = await api(`/api/training/jobs/${id}`);
    } catch (err) {
      $("job-error").replaceChildren(el("p", {}, err.detail || String(err)));
      $("job-error").hidden = false;
      return;
    }
    renderJob(job);
    followJob(job);
  }

  /** Read the log, timeline and checkpoints, then follow the job live until it finishes. */
  function followJob(job) {
    const id = job.job_id;
    loadLogs(id);
    loadTimeline(id);
    loadCheckpoints(id);
    if (!FINISHED.has(job.status)) {
      every(REFRESH_MS, () => loadLogs(id));
      every(CHECKPOINTS_REFRESH_MS, () => loadCheckpoints(id));
    }
    const controller = new AbortController();
    state.stream = controller;
    followEvents(id, controller);
  }

  function fact(label, value, testid) {
    return [el("div", { className: "fact" }, el("dt", {}, label), el("dd", { "data-testid": testid }, value))];
  }

  function renderJob(job) {
    if (location.hash !== `#/jobs/${job.job_id}`) return;
    state.job = job;
    const finished = FINISHED.has(job.status);
    $("job-title").textContent = job.run_name ? `${job.run_name} (${job.job_id})` : `Job ${job.job_id}`;
    $("job-status").replaceChildren(statusBadge(job.status, job.status === "queued" ? job.wait_reason : null));
    $("job-status").dataset.status = job.status;
    const percent = Math.round((job.progress || 0) * 100);
    $("job-progress-fill").style.width = `${percent}%`;
    $("job-progressbar").setAttribute("aria-valuenow", String(percent));
    $("job-progress-text").textContent =
      `${percent}% · step ${job.current_step} of ${job.total_steps || "?"} · epoch ${formatNumber(job.current_epoch, 3)} of ${job.total_epochs}`;
    const mayChange = state.user.role === "admin" || (state.user.role === "trainer" && job.owner === state.user.name);
    $("job-cancel").hidden = finished || !mayChange;
    $("job-resume").hidden = !RESUMABLE.has(job.status) || !mayChange;

    if (job.error_message) {
      $("job-error").replaceChildren(el("h2", {}, "Error"), el("pre", { className: "wrap" }, job.error_message));
      $("job-error").hidden = false;
    } else $("job-error").hidden = true;
    if (job.warnings.length) {
      $("job-warnings").replaceChildren(
        el("h2", {}, "Warnings"),
        el("ul", {}, ...job.warnings.map((w) => el("li", {}, w))),
      );
      $("job-warnings").hidden = false;
    } else $("job-warnings").hidden = true;
    $("job-model").hidden = !(job.status === "completed" && job.model_path);
    $("job-model-path").textContent = job.model_path || "";

    const m = job.metrics || {};
    $("job-facts").replaceChildren(
      ...fact("Model", job.model_id, "fact-model"),
      ...fact("Dataset", job.dataset_id, "fact-dataset"),
      ...fact("Training type", TYPE_LABELS[job.training_type] || job.training_type, "fact-type"),
      ...fact("Mode", job.mode, "fact-mode"),
      ...fact("Owner", job.owner || "—", "fact-owner"),
      ...fact("Priority", String(job.priority ?? 0), "fact-priority"),
      ...(job.status === "queued" ? fact("Waiting because", job.wait_reason || "—", "fact-wait-reason") : []),
      ...fact("Created", formatTime(job.created_at), "fact-created"),
      ...fact("Started", formatTime(job.started_at), "fact-started"),
      ...fact("Finished", formatTime(job.completed_at), "fact-finished"),
      ...fact("Loss", formatNumber(job.loss), "fact-loss"),
      ...RATE_FACTS.flatMap(([key, label, testid, format]) => fact(label, format(state.rates[key]), testid)),
      ...fact("Eval loss", formatNumber(job.eval_loss), "fact-eval-loss"),
      ...(m.initial_eval_loss !== undefined ? fact("Eval loss before training", formatNumber(m.initial_eval_loss), "fact-initial-eval-loss") : []),
      ...fact("Learning rate", formatNumber(job.learning_rate), "fact-lr"),
      ...(m.train_runtime !== undefined ? fact("Training time", formatSeconds(m.train_runtime), "fact-runtime") : []),
      ...(m.peak_rss_gb !== undefined ? fact("Peak memory", formatGB(m.peak_rss_gb), "fact-peak-memory") : []),
    );
    if (!$("job-config").rows.length) {
      $("job-config").replaceChildren(
        el("tbody", {},
          ...Object.entries(job.config).map(([key, value]) =>
            el("tr", {}, el("th", { scope: "row" }, key), el("td", {}, value === null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value))),
          ),
        ),
      );
    }
  }

  async function loadLogs(id) {
    try {
      const tail = await api(`/api/training/jobs/${id}/logs?tail=200`);
      const pre = $("job-logs");
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      pre.textContent = tail.lines.join("\n") || "(no output yet)";
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    } catch (err) {
      $("job-logs").textContent = `Could not read the log: ${err.detail || err.message}`;
    }
  }

  async function cancelJob() {
    const job = state.job;
    if (!job || !window.confirm(`Cancel job ${job.job_id}? Its worker is stopped.`)) return;
    $("job-cancel").disabled = true;
    try {
      renderJob(await api(`/api/training/jobs/${job.job_id}/cancel`, { method: "POST" }));
    } catch (err) {
      $("job-error").replaceChildren(el("p", {}, `Cancel failed: ${err.detail}`));
      $("job-error").hidden = false;
    } finally {
      $("job-cancel").disabled = false;
    }
  }

  async function resumeJob() {
    const job = state.job;
    if (!job) return;
    $("job-resume").disabled = true;
    let resumed;
    try {
      resumed = await api(`/api/training/jobs/${job.job_id}/resume`, { method: "POST" });
    } catch (err) {
      $("job-error").replaceChildren(el("p", {}, `Resume failed: ${err.detail}`));
      $("job-error").hidden = false;
      return;
    } finally {
      $("job-resume").disabled = false;
    }
    if (location.hash !== `#/jobs/${resumed.job_id}`) return;
    // The earlier stream ended with the job: follow it live again, as after a start.
    stopLive();
    renderJob(resumed);
    followJob(resumed);
  }

  /** Latest throughput and memory from a metric row, shown next to the loss. */
  function addRates(row) {
    for (const [key, , testid, format] of RATE_FACTS) {
      const value = row[key];
      if (typeof value !== "number" || !Number.isFinite(value)) continue;
      state.rates[key] = value;
      const cell = $("job-facts").querySelector(`[data-testid="${testid}"]`);
      if (cell) cell.textContent = format(value);
    }
  }

  // ---------------------------------------------------------------- timeline and checkpoints

  async function loadTimeline(id) {
    let timeline;
    try {
      timeline = await api(`/api/training/jobs/${id}/timeline`);
    } catch (err) {
      if (location.hash !== `#/jobs/${id}`) return;
      $("job-timeline-empty").textContent = `Could not read the timeline: ${err.detail || err.message}`;
      $("job-timeline-empty").hidden = false;
      return;
    }
    addNotices(id, timeline.events);
  }

  /** Add events (from /timeline or `notice` stream events); each id is shown once. */
  function addNotices(id, events) {
    if (location.hash !== `#/jobs/${id}`) return;
    let added = false;
    for (const event of events) {
      if (event.job_id !== id || state.timeline.has(event.id)) continue;
      state.timeline.set(event.id, event);
      added = true;
    }
    if (added) renderTimeline();
  }

  function renderTimeline() {
    const events = [...state.timeline.values()].sort((a, b) => a.id - b.id);
    $("job-timeline-empty").textContent = "Nothing to report yet.";
    $("job-timeline-empty").hidden = events.length > 0;
    $("job-timeline").replaceChildren(
      ...events.map((e) =>
        el(
          "li",
          { className: `timeline-item timeline-${e.level}`, "data-testid": "timeline-item", "data-kind": e.kind, "data-level": e.level },
          el(
            "div",
            { className: "timeline-head" },
            el("span", { className: "timeline-kind" }, e.level === "info" ? null : el("span", { className: "visually-hidden" }, `${e.level}: `), EVENT_LABELS[e.kind] || e.kind.replaceAll("_", " ")),
            el("time", { className: "small muted", datetime: e.created_at }, formatTime(e.created_at)),
          ),
          el("p", { className: "timeline-message" }, e.message),
        ),
      ),
    );
  }

  async function loadCheckpoints(id) {
    let list;
    try {
      list = await api(`/api/training/jobs/${id}/checkpoints`);
    } catch (err) {
      if (location.hash !== `#/jobs/${id}`) return;
      $("job-checkpoints-summary").textContent = `Could not list the checkpoints: ${err.detail || err.message}`;
      return;
    }
    if (location.hash !== `#/jobs/${id}`) return;
    const rows = list.checkpoints;
    $("job-checkpoints-summary").textContent = rows.length
      ? `${rows.length === 1 ? "1 checkpoint" : `${rows.length} checkpoints`}, ${formatBytes(list.total_bytes)} in all.`
      : "No checkpoint saved yet.";
    $("job-checkpoints").hidden = rows.length === 0;
    $("job-checkpoints-body").replaceChildren(
      ...rows.map((c) =>
        el(
          "tr",
          { "data-testid": "checkpoint-row", "data-step": c.step },
          el("td", { className: "num" }, c.step.toLocaleString()),
          el("td", { className: "num" }, formatNumber(c.loss)),
          el("td", { className: "num" }, formatNumber(c.eval_loss)),
          el("td", { className: "num" }, formatBytes(c.size_bytes)),
          el("td", { "data-testid": "checkpoint-best" }, c.is_best ? el("span", { className: "best-badge", title: "The Trainer's best checkpoint" }, "★ best") : ""),
        ),
      ),
    );
  }

  /** Follow the job's Server-Sent Events with fetch (EventSource cannot send a token). */
  async function followEvents(id, controller) {
    while (!controller.signal.aborted) {
      let ended = false;
      try {
        $("job-stream-state").textContent = "Live: following the job's events.";
        ended = await readEvents(id, controller.signal);
      } catch (err) {
        if (controller.signal.aborted) return;
        if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
          $("job-stream-state").textContent = `Live updates stopped: ${err.detail}`;
          return;
        }
      }
      if (controller.signal.aborted) return;
      if (ended) {
        $("job-stream-state").textContent = "The job has finished.";
        for (const timer of state.timers) clearInterval(timer);
        state.timers = [];
        loadLogs(id);
        loadCheckpoints(id);
        try {
          const job = await api(`/api/training/jobs/${id}`);
          if (controller.signal.aborted) return; // resumed meanwhile: a new stream follows it
          renderJob(job);
        } catch {
          /* the last progress event already showed the job */
        }
        const job = state.job;
        if (job && job.job_id === id && RESUMABLE.has(job.status)) {
          const hint = $("job-resume").hidden ? "" : " Resume continues it from its latest checkpoint.";
          $("job-stream-state").textContent = `The job stopped (${job.status}) before the end of its training.${hint}`;
        }
        return;
      }
      $("job-stream-state").textContent = "Connection lost; reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  /** Read one connection of the stream; true when the server sent `end`. */
  async function readEvents(id, signal) {
    const resp = await fetch(`/api/training/jobs/${id}/events`, {
      headers: { Accept: "text/event-stream", ...authHeaders() },
      signal,
      cache: "no-store",
    });
    if (!resp.ok) {
      const err = await errorFrom(resp);
      if (resp.status === 401) signedOut(err.detail);
      throw err;
    }
    // The server replays the whole history on each connection.
    state.series = { loss: [], eval_loss: [], learning_rate: [] };
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = "message";
    let data = [];
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[newline] === "\r" && newline === buffer.length - 1) break; // maybe \r\n split
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length) ended = handleEvent(id, event, data.join("\n")) || ended;
          event = "message";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (name === "event") event = text;
          else if (name === "data") data.push(text);
        }
      }
    }
    return ended;
  }

  function handleEvent(id, event, text) {
    let payload;
    try {
      payload = JSON.parse(text);
    } catch {
      return false;
    }
    if (event === "progress") renderJob(payload);
    else if (event === "metric") addMetric(payload);
    else if (event === "notice") addNotices(id, [payload]);
    else if (event === "end") return true;
    return false;
  }

  function addMetric(row) {
    addRates(row);
    for (const key of ["loss", "eval_loss", "learning_rate"]) {
      const y = row[key];
      if (typeof y !== "number" || !Number.isFinite(y)) continue;
      const points = state.series[key];
      const last = points[points.length - 1];
      // The final evaluation is logged twice at the same step; keep one point per step.
      if (last && last.x === row.step) last.y = y;
      else points.push({ x: row.step, y });
    }
    scheduleDraw();
  }

  // ---------------------------------------------------------------- charts

  function scheduleDraw() {
    if (state.drawPending) return;
    state.drawPending = true;
    requestAnimationFrame(() => {
      state.drawPending = false;
      const series = state.series || { loss: [], eval_loss: [], learning_rate: [] };
      drawLineChart($("chart-loss"), series.loss, { color: "#2563eb" });
      drawLineChart($("chart-eval-loss"), series.eval_loss, { color: "#d97706" });
      drawLineChart($("chart-lr"), series.learning_rate, { color: "#059669" });
    });
  }

  function formatTick(value) {
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) {
      const [mantissa, exponent] = value.toExponential(2).split("e");
      return `${Number(mantissa)}e${Number(exponent)}`;
    }
    return String(Number(value.toPrecision(4)));
  }

  /** Round tick values covering [min, max] with about `count` steps of 1, 2 or 5 × 10^k. */
  function niceTicks(min, max, count) {
    const raw = (max - min) / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => raw <= s) || 10 * magnitude;
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  /** Draw points ({x, y}) as a line with axes; records the count in data-points. */
  function drawLineChart(canvas, points, { color }) {
    if (!canvas || canvas.offsetParent === null) return;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.color;
    const grid = style.getPropertyValue("--grid").trim() || "rgba(128,128,128,0.25)";
    ctx.font = `12px ${style.fontFamily}`;
    canvas.dataset.points = String(points.length);
    if (!points.length) {
      ctx.fillStyle = ink;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("No data yet", width / 2, height / 2);
      return;
    }
    let xMin = Math.min(...points.map((p) => p.x));
    let xMax = Math.max(...points.map((p) => p.x));
    let yMin = Math.min(...points.map((p) => p.y));
    let yMax = Math.max(...points.map((p) => p.y));
    if (xMax - xMin < 1) xMax = xMin + 1; // steps are whole numbers: at least one step wide
    if (yMin === yMax) {
      const pad = Math.abs(yMin) * 0.05 || 1;
      yMin -= pad;
      yMax += pad;
    } else {
      const pad = (yMax - yMin) * 0.08;
      yMin -= pad;
      yMax += pad;
    }
    const yTicks = niceTicks(yMin, yMax, 4);
    const xTicks = niceTicks(xMin, xMax, 5).filter((t) => Number.isInteger(t));
    const labelWidth = Math.max(...yTicks.map((t) => ctx.measureText(formatTick(t)).width));
    const left = Math.ceil(labelWidth) + 14;
    const right = 12;
    const top = 10;
    const bottom = 34;
    const plotW = Math.max(10, width - left - right);
    const plotH = Math.max(10, height - top - bottom);
    const sx = (x) => left + ((x - xMin) / (xMax - xMin)) * plotW;
    const sy = (y) => top + (1 - (y - yMin) / (yMax - yMin)) * plotH;

    ctx.strokeStyle = grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = ink;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const t of yTicks) {
      const y = Math.round(sy(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + plotW, y);
      ctx.stroke();
      ctx.fillText(formatTick(t), left - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of xTicks) {
      const x = Math.round(sx(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + plotH);
      ctx.stroke();
      ctx.fillText(formatTick(t), x, top + plotH + 4);
    }
    ctx.fillText("step", left + plotW / 2, top + plotH + 18);

    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(sx(p.x), sy(p.y)) : ctx.moveTo(sx(p.x), sy(p.y))));
    ctx.stroke();
    if (points.length <= 60) {
      ctx.fillStyle = color;
      for (const p of points) {
        ctx.beginPath();
        ctx.arc(sx(p.x), sy(p.y), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    const last = points[points.length - 1];
    canvas.setAttribute("aria-label", `${canvas.getAttribute("aria-label").split(":")[0]}: ${points.length} points, last ${formatNumber(last.y)} at step ${last.x}`);
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
