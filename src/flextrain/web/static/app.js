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
  // Remaining time from the steps of the last minute: recent enough to follow a change
  // of speed (an evaluation, a busier machine), long enough to smooth single steps.
  const STEP_WINDOW_MS = 60000;
  const ESTIMATE_KEY = "flextrain.estimate.";
  const JOBS_PER_PAGE = 20;
  const CHECKPOINTS_REFRESH_MS = 10000;
  const FINISHED = new Set(["completed", "failed", "cancelled", "interrupted", "diverged", "paused"]);
  // Ended without finishing: POST .../resume continues these from their latest checkpoint.
  const RESUMABLE = new Set(["failed", "cancelled", "interrupted", "diverged", "paused"]);

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
    [
      "LoRA",
      [
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "load_in_4bit",
        "bnb_4bit_quant_type",
        "bnb_4bit_use_double_quant",
      ],
    ],
    ["Preference and reward training", ["preference"]],
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
    preference: "Preference options (JSON)",
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
    load_in_4bit: "4-bit base (QLoRA)",
    bnb_4bit_quant_type: "4-bit code",
    bnb_4bit_use_double_quant: "Double quantization",
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
    dpo: "DPO (preference pairs)",
    orpo: "ORPO (preference pairs)",
    kto: "KTO (answers marked good or bad)",
    simpo: "SimPO (preference pairs)",
    grpo: "GRPO (rewards on sampled answers)",
  };
  // The knobs a preset fills (config/presets.py); the API does not list them.
  const PRESET_KNOBS = ["num_epochs", "learning_rate", "batch_size", "max_length"];
  const EVENT_LABELS = {
    interrupted: "Interrupted",
    diverged: "Diverged",
    paused: "Paused",
    loss_spike: "Loss spike",
    loss_stalled: "Loss stalled",
    skipped_step: "Step skipped",
    rolled_back: "Rolled back",
    disk_low: "Disk low",
    checkpoints_pruned: "Checkpoints pruned",
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
  // Logged by TRL: [metric key, chart caption]; the first a row has is plotted.
  const REWARD_SERIES = [
    ["rewards/margins", "Reward margin (chosen − rejected)"],
    ["reward", "Mean reward of sampled answers"],
  ];
  const MEMORY_PARTS = [
    ["weights_gb", "Weights"],
    ["gradients_gb", "Gradients"],
    ["optimizer_gb", "Optimizer state"],
    ["activations_gb", "Activations"],
    ["logits_gb", "Logits"],
    ["dequantization_gb", "4-bit dequantization"],
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
    stepTimes: [], // {at: ms, step} when the job shown reached each new step (server time)
    uploadChecked: null, // uploadSignature() of the file last checked without errors
    drawPending: false,
  };

  const $ = (id) => document.getElementById(id);

  /** replaceChildren that skips null/false children (optional parts of a view). */
  function fill(node, ...children) {
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  /**
   * Create an element; attrs go to properties (className, hidden, ...) or attributes.
   * `style` is an object set through the CSSOM: the page's Content-Security-Policy
   * (style-src 'self') refuses style="..." attributes.
   */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "style") Object.assign(node.style, value);
      else if (key === "className" || key === "textContent" || key === "value") node[key] = value;
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

  /** A call to the REST API: `body` goes as JSON, `form` (FormData) as multipart.
   * `withHeaders`: resolve to { body, headers } (a paged list's X-Total-Count). */
  async function api(
    path,
    { method = "GET", body, form, signal, quiet401 = false, withHeaders = false } = {},
  ) {
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers,
        body: form !== undefined ? form : body === undefined ? undefined : JSON.stringify(body),
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
    const parsed = resp.status === 204 ? null : await resp.json();
    return withHeaders ? { body: parsed, headers: resp.headers } : parsed;
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
      el("div", { className: "progress-fill", style: { width: `${percent}%` } }),
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
    $("upload-check").addEventListener("click", checkUpload);
    $("upload-form").addEventListener("submit", saveUpload);
    $("upload-form").addEventListener("input", markUploadStale);
    $("upload-form").addEventListener("change", markUploadStale);
    $("dataset-delete").addEventListener("click", () => deleteDataset(false));
    $("diff-form").addEventListener("submit", diffModels);
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
    for (const timer of state.timers) {
      clearInterval(timer);
      clearTimeout(timer);
    }
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
    const dataset = hash.match(/^#\/datasets(?:\/(.+))?$/);
    const model = hash.match(/^#\/models(?:\/(.+))?$/);
    const newJob = hash.match(/^#\/new(?:\?(.*))?$/);
    if (newJob) showNew(new URLSearchParams(newJob[1] || ""));
    else if (dataset) showDatasets(dataset[1] ? decodeURIComponent(dataset[1]) : null);
    else if (model) showModels(model[1] ? decodeURIComponent(model[1]) : null);
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
      // A plain list (the seed's shape); the header says how many there are in all.
      const { body, headers } = await api(`/api/training/jobs?${query}`, { withHeaders: true });
      page = { items: body, total: Number(headers.get("X-Total-Count")), offset: state.jobsOffset };
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


  // ---------------------------------------------------------------- datasets

  /** A dataset id in a URL path: each part encoded, the '/' between them kept. */
  function datasetPath(name) {
    return name.split("/").map(encodeURIComponent).join("/");
  }

  function mayDelete(dataset) {
    // Bundled demos (no owner) stay; a trainer deletes their own, an admin any.
    if (!dataset.owner) return false;
    return state.user.role === "admin" || (state.user.role === "trainer" && dataset.owner === state.user.name);
  }

  function showDatasets(selected) {
    showView("datasets");
    const canAdd = state.user.role !== "viewer";
    $("upload-form").hidden = !canAdd;
    $("upload-denied").hidden = canAdd;
    $("upload-help").hidden = !canAdd;
    loadDatasets(selected);
  }

  async function loadDatasets(selected) {
    let list;
    try {
      list = await api("/api/datasets");
    } catch (err) {
      $("datasets-error").textContent = err.detail || String(err);
      $("datasets-error").hidden = false;
      return;
    }
    $("datasets-error").hidden = true;
    state.datasets = list;
    $("datasets-count").textContent = `${list.length} you may use`;
    $("datasets-body").replaceChildren(
      ...list.map((d) => {
        const row = el(
          "tr",
          { "data-dataset-id": d.dataset_id, "data-testid": "dataset-row", "aria-selected": String(d.dataset_id === selected) },
          el("td", {}, el("a", { href: `#/datasets/${encodeURIComponent(d.dataset_id)}`, "data-testid": "dataset-link" }, d.dataset_id)),
          el("td", {}, d.shape || d.format),
          el("td", { className: "num", "data-testid": "dataset-rows" }, d.num_rows.toLocaleString()),
          el("td", { className: "opt" }, el("code", {}, (d.version || "—").slice(0, 12))),
          el("td", { className: "opt" }, d.owner || "bundled"),
          el("td", { className: "opt" }, d.shared ? "yes" : "no"),
        );
        row.addEventListener("click", (event) => {
          if (event.target.closest("a")) return;
          location.hash = `#/datasets/${encodeURIComponent(d.dataset_id)}`;
        });
        return row;
      }),
    );
    const dataset = selected ? list.find((d) => d.dataset_id === selected) : null;
    if (dataset) showDataset(dataset);
    else {
      $("dataset-detail").hidden = true;
      if (selected) {
        $("datasets-error").textContent = `No dataset '${selected}' that you may see.`;
        $("datasets-error").hidden = false;
      }
    }
  }

  async function showDataset(dataset) {
    const name = dataset.dataset_id;
    const detail = $("dataset-detail");
    detail.hidden = false;
    detail.dataset.datasetId = name;
    $("dataset-title").textContent = name;
    const labels = dataset.labels.length ? ` · labels ${dataset.labels.join(", ")}` : "";
    $("dataset-about").textContent =
      `${dataset.num_rows.toLocaleString()} rows of ${dataset.shape || dataset.format} data${labels}` +
      `${dataset.description ? ` · ${dataset.description}` : ""}`;
    $("dataset-error").hidden = true;
    $("dataset-use").href = `#/new?dataset=${encodeURIComponent(name)}`;
    $("dataset-use").hidden = state.user.role === "viewer";
    $("dataset-delete").hidden = !mayDelete(dataset);
    $("dataset-versions-body").replaceChildren();
    $("dataset-preview").replaceChildren();
    $("dataset-preview-note").textContent = "Reading…";
    const stillShown = () => !detail.hidden && detail.dataset.datasetId === name;
    const [versions, preview] = await Promise.allSettled([
      api(`/api/datasets/${datasetPath(name)}/versions`),
      api(`/api/datasets/${datasetPath(name)}/preview?limit=20`),
    ]);
    if (!stillShown()) return;
    renderVersions(versions);
    renderPreview(preview);
  }

  function renderVersions(result) {
    const note = $("dataset-versions-note");
    if (result.status === "rejected") {
      note.textContent = `Could not list the versions: ${result.reason.detail || result.reason.message}`;
      note.hidden = false;
      return;
    }
    const versions = result.value;
    note.textContent = versions.length ? "" : "Bundled with flextrain: one version, not stored in the database.";
    note.hidden = versions.length > 0;
    $("dataset-versions-body").replaceChildren(
      ...versions
        .slice()
        .reverse()
        .map((v, i) =>
          el(
            "tr",
            { "data-testid": "version-row", "data-version": v.version },
            el("td", {}, el("code", { title: v.version }, v.version.slice(0, 12)), i === 0 ? el("span", { className: "muted small" }, " latest") : null),
            el("td", { className: "num" }, v.num_rows.toLocaleString()),
            el("td", { className: "num" }, formatBytes(v.size_bytes)),
            el("td", {}, v.source_name),
            el("td", { className: "nowrap" }, formatTime(v.created_at)),
            el("td", {}, v.jobs.length ? v.jobs.map((id, k) => [k ? ", " : "", el("a", { href: `#/jobs/${id}` }, id)]).flat() : "—"),
          ),
        ),
    );
  }

  function cellText(value) {
    if (value === null || value === undefined) return "—";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function renderPreview(result) {
    const note = $("dataset-preview-note");
    const table = $("dataset-preview");
    if (result.status === "rejected") {
      note.textContent = `Could not read the rows: ${result.reason.detail || result.reason.message}`;
      table.replaceChildren();
      return;
    }
    const preview = result.value;
    const columns = [...preview.columns];
    for (const row of preview.rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
    const cut = preview.truncated_values ? ` Values over 1,000 characters are cut short (${preview.truncated_values}).` : "";
    note.textContent = `The first ${preview.rows.length} of ${preview.total_rows.toLocaleString()} rows, as training reads them.${cut}`;
    table.replaceChildren(
      el("thead", {}, el("tr", {}, el("th", { scope: "col", className: "num" }, "#"), ...columns.map((c) => el("th", { scope: "col" }, c)))),
      el(
        "tbody",
        {},
        ...preview.rows.map((row, i) =>
          el(
            "tr",
            { "data-testid": "preview-row" },
            el("td", { className: "num muted" }, String(i + 1)),
            ...columns.map((c) => el("td", { "data-column": c }, cellText(row[c]))),
          ),
        ),
      ),
    );
  }

  async function deleteDataset(force = false) {
    const name = $("dataset-detail").dataset.datasetId;
    if (!name) return;
    if (!force && !window.confirm(`Delete dataset ${name}, every version of it?`)) return;
    const button = $("dataset-delete");
    button.disabled = true;
    try {
      await api(`/api/datasets/${datasetPath(name)}${force ? "?force=true" : ""}`, { method: "DELETE" });
    } catch (err) {
      const box = $("dataset-error");
      const again =
        err.status === 409
          ? el("button", { type: "button", className: "btn btn-small btn-danger", "data-testid": "dataset-delete-force", onclick: () => deleteDataset(true) }, "Delete anyway")
          : null;
      fill(box, el("p", {}, `Not deleted: ${err.detail}`), again);
      box.hidden = false;
      return;
    } finally {
      button.disabled = false;
    }
    $("upload-status").textContent = `Deleted ${name}.`;
    if (location.hash === "#/datasets") loadDatasets(null);
    else location.hash = "#/datasets";
  }

  // ---------------------------------------------------------------- registered models

  const REGISTRY = "/api/training/models/registry";

  /** A model name or name:N in a URL path: each part encoded, the '/' between them kept. */
  function modelPath(ref) {
    return ref.split("/").map(encodeURIComponent).join("/");
  }

  /** Whether the user may add versions to a name: its first version's owner, or an admin. */
  function mayExtend(versions) {
    if (state.user.role === "admin") return true;
    return state.user.role === "trainer" && versions.length > 0 && versions[0].owner === state.user.name;
  }

  function mayRemove(version) {
    if (state.user.role === "admin") return true;
    return state.user.role === "trainer" && version.owner === state.user.name;
  }

  function showModels(selected) {
    showView("models");
    loadModels(selected);
  }

  async function loadModels(selected) {
    let list;
    try {
      list = await api(REGISTRY);
    } catch (err) {
      $("models-error").textContent = err.detail || String(err);
      $("models-error").hidden = false;
      return;
    }
    $("models-error").hidden = true;
    $("models-count").textContent = plural(list.length, "model");
    $("models-body").replaceChildren(
      ...list.map((m) =>
        el(
          "tr",
          { "data-model": m.name, "data-testid": "model-row", "aria-selected": String(m.name === selected) },
          el("td", {}, el("a", { href: `#/models/${encodeURIComponent(m.name)}`, "data-testid": "model-link" }, m.name)),
          el("td", { "data-testid": "model-latest" }, `version ${m.version}`),
          el("td", {}, m.source + (m.adapter ? " (adapter)" : "")),
          el("td", { className: "opt" }, m.architecture || "—"),
          el("td", { className: "opt" }, m.base_model || "—"),
          el("td", { className: "opt nowrap" }, formatTime(m.created_at)),
        ),
      ),
    );
    if (!list.length) $("models-body").replaceChildren(el("tr", {}, el("td", { colSpan: 6, className: "muted" }, "None yet.")));
    if (selected) showModel(selected);
    else $("model-detail").hidden = true;
  }

  async function showModel(name) {
    const detail = $("model-detail");
    detail.hidden = false;
    detail.dataset.model = name;
    $("model-error").hidden = true;
    $("model-diff").hidden = true;
    let model;
    try {
      model = await api(`${REGISTRY}/${modelPath(name)}`);
    } catch (err) {
      $("model-title").textContent = name;
      $("model-about").textContent = "";
      $("model-versions-body").replaceChildren();
      fill($("model-error"), el("p", {}, err.detail || String(err)));
      $("model-error").hidden = false;
      return;
    }
    if (detail.dataset.model !== name) return;
    $("model-title").textContent = model.name;
    const kind = model.adapter ? "LoRA adapter" : model.architecture || "model";
    $("model-about").textContent = `${plural(model.versions.length, "version")} · latest ${model.ref}, ${kind}` + (model.description ? ` · ${model.description}` : "");
    $("model-use").href = `#/new?model=${encodeURIComponent(model.name)}`;
    $("model-use").hidden = state.user.role === "viewer" || model.adapter;
    renderModelVersions(model.versions);
    const refs = model.versions.map((v) => v.ref);
    for (const [id, pick] of [["diff-a", refs.length - 2], ["diff-b", refs.length - 1]]) {
      $(id).replaceChildren(...refs.map((ref) => el("option", { value: ref }, ref)));
      $(id).value = refs[Math.max(0, pick)];
    }
    $("diff-form").hidden = refs.length < 2;
  }

  function renderModelVersions(versions) {
    const extend = mayExtend(versions);
    $("model-versions-body").replaceChildren(
      ...versions
        .slice()
        .reverse()
        .map((v) => {
          const loss = v.metrics && (v.metrics.eval_loss ?? v.metrics.train_loss);
          const actions = [];
          if (!v.latest && extend) {
            actions.push(el("button", { type: "button", className: "btn btn-small", "data-testid": "version-promote", onclick: () => promoteVersion(v) }, "Make latest"));
          }
          if (mayRemove(v)) {
            actions.push(el("button", { type: "button", className: "btn btn-small btn-danger", "data-testid": "version-remove", onclick: () => removeVersion(v) }, "Remove"));
          }
          return el(
            "tr",
            { "data-testid": "model-version-row", "data-ref": v.ref },
            el("td", {}, el("code", {}, String(v.version)), v.latest ? el("span", { className: "muted small" }, " latest") : null),
            el("td", {}, v.source + (v.adapter ? " (adapter)" : "")),
            el("td", {}, v.job_id ? el("a", { href: `#/jobs/${v.job_id}` }, v.job_id) : "—"),
            el("td", {}, v.base_model || "—"),
            el("td", {}, el("code", { title: v.dataset_version || "" }, (v.dataset_version || "—").slice(0, 12))),
            el("td", {}, el("code", { title: v.config_hash || "" }, (v.config_hash || "—").slice(0, 12))),
            el("td", { className: "num" }, typeof loss === "number" ? formatNumber(loss) : "—"),
            el("td", { className: "nowrap" }, formatTime(v.created_at)),
            el("td", {}, ...actions),
          );
        }),
    );
  }

  function modelError(prefix, err) {
    fill($("model-error"), el("p", {}, `${prefix}: ${err.detail || err.message}`));
    $("model-error").hidden = false;
  }

  async function promoteVersion(version) {
    try {
      await api(`${REGISTRY}/promote`, { method: "POST", body: { source: version.ref, name: version.name } });
    } catch (err) {
      modelError(`${version.ref} was not made the latest`, err);
      return;
    }
    loadModels(version.name);
  }

  async function removeVersion(version) {
    if (!window.confirm(`Remove ${version.ref}? Its files stay where they are.`)) return;
    try {
      await api(`${REGISTRY}/${modelPath(version.ref)}`, { method: "DELETE" });
    } catch (err) {
      modelError(`${version.ref} was not removed`, err);
      return;
    }
    const left = $("model-versions-body").children.length > 1;
    if (left) loadModels(version.name);
    else location.hash = "#/models";
  }

  function diffTable(testid, head, rows) {
    return el(
      "table",
      { className: "data-table", "data-testid": testid },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows.map((cells) => el("tr", { "data-key": cells[0] }, ...cells.map((c) => el("td", {}, c))))),
    );
  }

  function verdict(diff) {
    if (!diff.configs_known) return "no training config recorded for both (a folder registered by hand has none)";
    return diff.same_config ? "the same config" : "different configs";
  }

  async function diffModels(event) {
    event.preventDefault();
    const a = $("diff-a").value;
    const b = $("diff-b").value;
    let diff;
    try {
      diff = await api(`/api/training/models/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    } catch (err) {
      modelError("Could not compare", err);
      return;
    }
    const box = $("model-diff");
    const parts = [el("p", { "data-testid": "diff-verdict" }, `${diff.a} vs ${diff.b}: ${verdict(diff)}`)];
    for (const [title, changes, testid] of [["Lineage", diff.lineage, "diff-lineage"], ["Config", diff.config, "diff-config"]]) {
      parts.push(el("h4", {}, title));
      parts.push(changes.length ? diffTable(testid, ["", diff.a, diff.b], changes.map((c) => [c.key, cellText(c.a), cellText(c.b)])) : el("p", { className: "muted" }, "No difference."));
    }
    parts.push(el("h4", {}, "Metrics"));
    const signed = (x) => (x === null ? "—" : (x > 0 ? "+" : "") + formatNumber(x));
    parts.push(
      diff.metrics.length
        ? diffTable("diff-metrics", ["", diff.a, diff.b, "change"], diff.metrics.map((m) => [m.key, m.a === null ? "—" : formatNumber(m.a), m.b === null ? "—" : formatNumber(m.b), signed(m.change)]))
        : el("p", { className: "muted" }, "Neither version has metrics."),
    );
    box.replaceChildren(...parts);
    box.hidden = false;
  }

  // -- checking and saving an upload

  /** What the last check was made of: saving needs a check of exactly this. */
  function uploadSignature() {
    const file = $("upload-file").files[0];
    if (!file) return null;
    return JSON.stringify([file.name, file.size, file.lastModified, $("upload-shape").value, $("upload-columns").value.trim()]);
  }

  function uploadForm(withSave) {
    const form = new FormData();
    form.append("file", $("upload-file").files[0]);
    const shape = $("upload-shape").value;
    const columns = $("upload-columns").value.trim();
    if (shape) form.append("shape", shape);
    if (columns) form.append("columns", columns);
    if (withSave) {
      form.append("name", $("upload-name").value.trim());
      form.append("description", $("upload-description").value.trim());
      form.append("shared", $("upload-shared").checked ? "true" : "false");
    }
    return form;
  }

  const UPLOAD_FIELDS = ["file", "name", "shape", "columns"];

  function clearUploadErrors() {
    $("upload-errors").hidden = true;
    $("upload-errors").replaceChildren();
    for (const name of UPLOAD_FIELDS) {
      $(`upload-${name}`).removeAttribute("aria-invalid");
      $(`err-upload-${name}`).textContent = "";
      $(`err-upload-${name}`).hidden = true;
    }
  }

  /** An API error on the upload form: each message under its field, and all in a list. */
  function showUploadErrors(err, prefix) {
    const items = [];
    for (const e of err.errors || []) {
      const text = e.fix ? `${e.message} Fix: ${e.fix}` : e.message;
      if (UPLOAD_FIELDS.includes(e.field)) {
        $(`upload-${e.field}`).setAttribute("aria-invalid", "true");
        const slot = $(`err-upload-${e.field}`);
        if (!slot.textContent) slot.textContent = text;
        slot.hidden = false;
      }
      items.push(el("li", { "data-field": e.field }, el("strong", {}, e.field), `: ${text}`));
    }
    fill($("upload-errors"), el("p", {}, `${prefix}${err.detail || err.message}`), items.length > 1 ? el("ul", {}, ...items) : null);
    $("upload-errors").hidden = false;
  }

  function markUploadStale() {
    if (state.uploadChecked && state.uploadChecked !== uploadSignature()) {
      state.uploadChecked = null;
      $("upload-save").disabled = true;
      if (!$("upload-report").hidden) $("upload-status").textContent = "The file or its options changed: check it again.";
    }
  }

  async function checkUpload() {
    clearUploadErrors();
    $("upload-report").hidden = true;
    state.uploadChecked = null;
    $("upload-save").disabled = true;
    if (!$("upload-file").files[0]) {
      showUploadErrors({ detail: "Choose a file to check.", errors: [{ field: "file", message: "No file chosen.", fix: "choose a data file." }] }, "");
      return;
    }
    const signature = uploadSignature();
    $("upload-check").disabled = true;
    $("upload-status").textContent = "Checking every row…";
    let report;
    try {
      report = await api("/api/datasets/validate", { method: "POST", form: uploadForm(false) });
    } catch (err) {
      $("upload-status").textContent = "";
      showUploadErrors(err, "The file cannot be used as it is: ");
      return;
    } finally {
      $("upload-check").disabled = false;
    }
    renderReport(report);
    if (report.ok) {
      state.uploadChecked = signature;
      $("upload-save").disabled = false;
      $("upload-status").textContent = "No errors: name it and save it.";
      if (!$("upload-name").value.trim()) {
        const stem = report.file_name.replace(/\.[^.]+$/, "").replace(/[^A-Za-z0-9_.-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
        $("upload-name").value = stem ? `${state.user.name}/${stem}`.slice(0, 200) : "";
      }
    } else {
      $("upload-status").textContent = "Correct the rows listed, then check the file again.";
    }
  }

  function issueItem(issue, testid) {
    return el(
      "li",
      { "data-testid": testid, "data-line": issue.line ?? "", "data-row": issue.row ?? "", "data-field": issue.field },
      el("span", {}, issue.message),
      issue.fix ? el("span", { className: "muted" }, ` Fix: ${issue.fix}`) : null,
    );
  }

  function plural(n, noun) {
    return `${n.toLocaleString()} ${noun}${n === 1 ? "" : "s"}`;
  }

  function renderReport(report) {
    $("report-file").textContent = report.file_name;
    const verdict = report.ok
      ? `✓ ${plural(report.rows, "row")} of ${report.shape} data, no errors${report.warning_count ? `, ${plural(report.warning_count, "warning")}` : ""}: it can be saved.`
      : `✗ ${plural(report.error_count, "error")} in ${plural(report.rows, "row")} of ${report.shape} data: nothing can be saved until they are corrected.`;
    const mapping = Object.entries(report.mapping).map(([part, column]) => (part === column ? part : `${part} ← ${column}`));
    const labels = Object.entries(report.labels)
      .sort((a, b) => b[1] - a[1])
      .map(([label, n]) => `${label} (${n.toLocaleString()})`);
    const tile = (label, value, testid) => el("div", { className: "tile" }, el("dt", {}, label), el("dd", { "data-testid": testid }, value));
    const more = (n, noun) => (n > 0 ? el("p", { className: "small", "data-testid": `report-more-${noun}s` }, `… and ${plural(n, noun)} more, not listed.`) : null);
    fill(
      $("report-body"),
      el("p", { className: `verdict ${report.ok ? "verdict-ok" : "verdict-bad"}`, "data-testid": "report-verdict", "data-ok": String(report.ok) }, verdict),
      el(
        "dl",
        { className: "tiles" },
        tile("Rows", report.rows.toLocaleString(), "report-rows"),
        tile("Shape", report.shape, "report-shape"),
        tile("Format", report.format, "report-format"),
        tile("Columns", report.columns.join(", ") || "—", "report-columns"),
        tile("Used as", mapping.join(", ") || "—", "report-mapping"),
        labels.length ? tile("Labels", labels.join(", "), "report-labels") : null,
        report.duplicate_rows ? tile("Duplicates", plural(report.duplicate_rows, "row"), "report-duplicates") : null,
      ),
      report.errors.length
        ? el(
            "div",
            { className: "error-box", "data-testid": "report-errors" },
            el("h3", {}, `Errors (${report.error_count.toLocaleString()})`),
            el("ol", { className: "issues" }, ...report.errors.map((i) => issueItem(i, "report-error"))),
            more(report.errors_not_shown, "error"),
          )
        : null,
      report.warnings.length
        ? el(
            "div",
            { className: "warn-box", "data-testid": "report-warnings" },
            el("h3", {}, `Warnings (${report.warning_count.toLocaleString()})`),
            el("ol", { className: "issues" }, ...report.warnings.map((i) => issueItem(i, "report-warning"))),
            more(report.warnings_not_shown, "warning"),
          )
        : null,
      el("details", {}, el("summary", {}, "The report as `flextrain datasets validate` prints it"), el("pre", { className: "logs", "data-testid": "report-summary" }, report.summary)),
    );
    $("upload-report").hidden = false;
  }

  async function saveUpload(event) {
    event.preventDefault();
    if (!state.uploadChecked || state.uploadChecked !== uploadSignature()) {
      $("upload-status").textContent = "Check the file first.";
      return;
    }
    clearUploadErrors();
    $("upload-save").disabled = true;
    $("upload-status").textContent = "Saving…";
    let saved;
    try {
      saved = await api("/api/datasets", { method: "POST", form: uploadForm(true) });
    } catch (err) {
      $("upload-save").disabled = false;
      $("upload-status").textContent = "";
      showUploadErrors(err, "Not saved: ");
      return;
    }
    state.uploadChecked = null;
    $("upload-form").reset();
    $("upload-report").hidden = true;
    $("upload-status").textContent = `Saved ${saved.dataset_id}, version ${saved.version.slice(0, 12)}.`;
    const target = `#/datasets/${encodeURIComponent(saved.dataset_id)}`;
    if (location.hash === target) loadDatasets(saved.dataset_id);
    else location.hash = target;
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
      else if (variant.type === "object") field.kind = "json";
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
    if (field.kind === "json") return JSON.stringify(field.default);
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
    const expert = schemas.ExpertTrainingConfig;
    const form = {
      fields,
      basicNames: new Set(Object.keys(basic.properties)),
      // Keys of the expert YAML (not form fields): their errors belong next to it.
      expertKeys: new Set(Object.keys(expert ? expert.properties : {}).filter((n) => !fields.has(n))),
      modelsList: el("datalist", { id: "models-list" }),
      datasetsList: el("datalist", { id: "datasets-list" }),
    };
    const datasetHelp = fields.get("dataset_id").wrapper.querySelector(".help");
    datasetHelp.append(
      " Pick one from the list: the bundled demos and the datasets you may use (add yours on the ",
      el("a", { href: "#/datasets" }, "Datasets page"),
      ").",
    );
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
      parts.push(`${dataset.dataset_id}: ${dataset.num_rows} rows (${dataset.shape || dataset.format}${labels}). ${dataset.description}`);
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

  /** The dataset field's suggestions: the bundled demos and every dataset the user may use. */
  async function loadDatasetChoices() {
    const form = state.form;
    try {
      state.datasets = await api("/api/datasets");
    } catch (err) {
      showFormErrors(err, "Could not list datasets: ");
      return;
    }
    form.datasetsList.replaceChildren(
      ...state.datasets.map((d) =>
        el("option", { value: d.dataset_id }, `${d.shape || d.format}, ${d.num_rows.toLocaleString()} rows${d.owner ? ` (${d.owner})` : ""}${d.description ? `: ${d.description}` : ""}`),
      ),
    );
    describeChoice();
  }

  async function loadChoices() {
    const form = state.form;
    await loadDatasetChoices();
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

  async function showNew(params) {
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
    } else {
      // A dataset saved on the Datasets page since the form was built is offered too.
      loadDatasetChoices();
    }
    const dataset = params && params.get("dataset");
    if (dataset) {
      state.form.fields.get("dataset_id").input.value = dataset;
      describeChoice();
      markCheckStale();
    }
    const model = params && params.get("model");
    if (model) {
      state.form.fields.get("model_id").input.value = model;
      describeChoice();
      markCheckStale();
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
      } else if (field.kind === "json") {
        // Options as a JSON object, e.g. {"beta": 0.2}; text that is not JSON goes as
        // typed, so the server names the field and says what it expects.
        try {
          config[name] = JSON.parse(raw);
        } catch {
          config[name] = raw;
        }
      } else config[name] = raw;
    }
    return config;
  }

  function clearFormErrors() {
    $("form-errors").hidden = true;
    $("form-errors").replaceChildren();
    $("expert-errors").hidden = true;
    $("expert-errors").replaceChildren();
    $("expert-yaml").removeAttribute("aria-invalid");
    if (!state.form) return;
    for (const field of state.form.fields.values()) {
      field.input.removeAttribute("aria-invalid");
      const slot = field.wrapper.querySelector(".field-error");
      slot.textContent = "";
      slot.hidden = true;
    }
  }

  /** An error of the expert YAML (parsing, a key, user code): is it about the YAML? */
  function isExpertError(path) {
    const name = path.split(/[.[]/)[0];
    return name === "yaml" || Boolean(state.form && state.form.expertKeys.has(name));
  }

  /**
   * Show an API error: a summary at the top that names each field, each message by its
   * field, and errors of the expert YAML next to its Check button (the page scrolls there,
   * not to the top, when the YAML is what is wrong).
   */
  function showFormErrors(err, prefix = "") {
    const box = $("form-errors");
    const items = [];
    const seen = new Set();
    const expertItems = [];
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
      if (!field && isExpertError(path) && currentMode() === "expert") {
        expertItems.push(el("li", { "data-field": path, "data-testid": "expert-error" }, el("strong", {}, path), `: ${text}`));
      }
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
    if (expertItems.length) {
      const near = $("expert-errors");
      const count = expertItems.length === 1 ? "1 problem" : `${expertItems.length} problems`;
      fill(near, el("p", {}, `${count} to fix in the YAML:`), el("ul", {}, ...expertItems));
      near.hidden = false;
      $("expert-yaml").setAttribute("aria-invalid", "true");
      near.scrollIntoView({ block: "nearest", behavior: "smooth" });
    } else box.scrollIntoView({ block: "start", behavior: "smooth" });
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
      state.checkSeconds = report.time ? report.time.seconds : null;
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
            ...MEMORY_PARTS.filter(([key]) => key !== "dequantization_gb" || memory[key]).map(([key, label]) => el("tr", {}, el("th", { scope: "row" }, label), el("td", {}, formatGB(memory[key])))),
            el("tr", { className: "total" }, el("th", { scope: "row" }, "Peak"), el("td", {}, formatGB(peak))),
            el("tr", {}, el("th", { scope: "row" }, "Available"), el("td", {}, formatGB(memory.available_gb))),
          ),
        ),
        el(
          "div",
          { className: `meter ${memory.fits ? "" : "meter-over"}`, role: "img", "aria-label": `Peak uses ${Math.round(share * 100)}% of available memory` },
          el("div", { className: "meter-fill", style: { width: `${Math.max(1, share * 100)}%` } }),
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
        time.batching
          ? el("p", { className: "small", "data-testid": "check-batching" }, `Batching: ${time.batching} (${time.batching_reason}).`)
          : null,
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

  /** The expert keys that name user code ([field, reference]), as ExpertTrainingConfig.user_code. */
  function userCodeRefs(config) {
    const refs = [];
    if (config.loss && config.loss.function) refs.push(["loss.function", config.loss.function]);
    if (config.optimizer && config.optimizer.factory) refs.push(["optimizer.factory", config.optimizer.factory]);
    const callbacks = Array.isArray(config.callbacks) ? config.callbacks.filter(Boolean) : [];
    if (callbacks.length) refs.push(["callbacks", callbacks.join(", ")]);
    if (config.trainer_class) refs.push(["trainer_class", config.trainer_class]);
    return refs;
  }

  /** User code runs on the server: only an admin may create a job that names it. */
  function adminOnlyIssues(config) {
    if (state.user.role === "admin") return [];
    return userCodeRefs(config).map(([field, ref]) => ({
      field,
      message: `names user code (${ref}), which runs on the server: admin only, so the job would be refused.`,
      fix: "use the built-in losses (cross_entropy, focal), an optimizer by name and lr_schedule_expr, or ask an admin to create this job.",
    }));
  }

  /**
   * The expert YAML as config keys, checked by the server (the same rules as the job;
   * user code is read there, never run) and, for a non-admin, refused up front when it
   * names user code. Shows the problems next to the Check button and throws when there
   * are any.
   */
  async function checkExpertYaml() {
    clearFormErrors();
    const status = $("expert-status");
    status.textContent = "Checking…";
    let result;
    try {
      result = await api("/api/training/expert/check", { method: "POST", body: { yaml: $("expert-yaml").value } });
    } catch (err) {
      status.textContent = err.status === 403 ? "Admin only." : "";
      showFormErrors(err, "The expert YAML has a problem. ");
      throw err;
    }
    const adminOnly = adminOnlyIssues(result.config);
    // For a non-admin, "code_dir is not set" would only lead them on: admin only says it.
    const issues = [...adminOnly, ...result.issues.filter((i) => !adminOnly.some((a) => a.field === i.field))];
    if (issues.length) {
      status.textContent = adminOnly.length ? "Admin only: this YAML names user code." : "";
      const err = { detail: "The expert YAML has problems.", errors: issues };
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
    const check = $("check-result");
    if (state.checkSeconds && !check.hidden && check.dataset.stale === "false") {
      // Shown as the remaining time until the run's own steps are timed.
      sessionStorage.setItem(ESTIMATE_KEY + job.job_id, String(state.checkSeconds));
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
    state.series = { loss: [], eval_loss: [], learning_rate: [], reward: [], grad_norm: [] };
    $("chart-reward-figure").hidden = true;
    $("chart-grad-norm-figure").hidden = true;
    state.rates = {};
    state.timeline = new Map();
    state.stepTimes = [];
    renderTime();
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
      every(1000, renderTime);
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
    const shown = state.job;
    const [fresh, seen] = [parseTime(job.updated_at), shown && parseTime(shown.updated_at)];
    if (shown && shown.job_id === job.job_id && fresh && seen && fresh < seen) {
      return; // an answer that left the server before the one already shown
    }
    state.job = job;
    recordStep(job);
    const finished = FINISHED.has(job.status);
    $("job-title").textContent = job.run_name ? `${job.run_name} (${job.job_id})` : `Job ${job.job_id}`;
    $("job-status").replaceChildren(statusBadge(job.status, job.status === "queued" ? job.wait_reason : null));
    $("job-status").dataset.status = job.status;
    const percent = Math.round((job.progress || 0) * 100);
    $("job-progress-fill").style.width = `${percent}%`;
    $("job-progressbar").setAttribute("aria-valuenow", String(percent));
    $("job-progress-text").textContent =
      `${percent}% · step ${job.current_step} of ${job.total_steps || "?"} · epoch ${formatNumber(job.current_epoch, 3)} of ${job.total_epochs}`;
    $("job-progress-text").dataset.step = String(job.current_step);
    renderTime();
    const mayChange = state.user.role === "admin" || (state.user.role === "trainer" && job.owner === state.user.name);
    $("job-cancel").hidden = finished || !mayChange;
    $("job-resume").hidden = !RESUMABLE.has(job.status) || !mayChange;

    if (job.error_message) {
      // A guard's stop says what it was (the message says what to change); else an error.
      const heading = { diverged: "Diverged", paused: "Paused" }[job.status] || "Error";
      $("job-error").replaceChildren(el("h2", {}, heading), el("pre", { className: "wrap" }, job.error_message));
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
      ...(job.cluster_job_id ? fact("Runs on", `${job.executor} job ${job.cluster_job_id}`, "fact-cluster-job") : []),
      ...fact("Created", formatTime(job.created_at), "fact-created"),
      ...fact("Started", formatTime(job.started_at), "fact-started"),
      ...fact("Finished", formatTime(job.completed_at), "fact-finished"),
      ...fact("Loss", formatNumber(job.loss), "fact-loss"),
      ...RATE_FACTS.flatMap(([key, label, testid, format]) => fact(label, format(state.rates[key]), testid)),
      ...fact("Eval loss", formatNumber(job.eval_loss), "fact-eval-loss"),
      ...(m.initial_eval_loss !== undefined ? fact("Eval loss before training", formatNumber(m.initial_eval_loss), "fact-initial-eval-loss") : []),
      ...fact("Learning rate", formatNumber(job.learning_rate), "fact-lr"),
      ...(m.eval_preference_accuracy !== undefined
        ? fact(
            "Preference accuracy (held out)",
            `${formatNumber(m.initial_eval_preference_accuracy)} → ${formatNumber(m.eval_preference_accuracy)}`,
            "fact-preference-accuracy",
          )
        : []),
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
      // The answer comes once the worker has saved its checkpoint and stopped: the job's
      // step is the checkpoint's, and the checkpoint is listed.
      renderJob(await api(`/api/training/jobs/${job.job_id}/cancel`, { method: "POST" }));
      loadCheckpoints(job.job_id);
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


  // ---------------------------------------------------------------- time and speed

  /** Keep when the job reached each new step: its updated_at is the server's time of the write. */
  function recordStep(job) {
    const times = state.stepTimes;
    const last = times[times.length - 1];
    if (last && job.current_step < last.step) times.length = 0; // started over
    if (job.current_step > 0 && (!last || job.current_step > last.step) && !FINISHED.has(job.status)) {
      const at = parseTime(job.updated_at);
      if (at) times.push({ at: at.getTime(), step: job.current_step });
    }
  }

  /** Seconds per optimizer step and where that figure comes from, or null. */
  function stepSeconds(job) {
    const times = state.stepTimes;
    if (times.length >= 2) {
      const last = times[times.length - 1];
      const first = times.find((t) => t.at >= last.at - STEP_WINDOW_MS && t.step < last.step) || times[0];
      if (last.step > first.step && last.at > first.at) {
        const seconds = (last.at - first.at) / 1000 / (last.step - first.step);
        return { seconds, source: "measured", why: `measured: ${formatStep(seconds)} a step over the last ${plural(last.step - first.step, "step")}` };
      }
    }
    const started = parseTime(job.started_at);
    const updated = parseTime(job.updated_at);
    // A resumed job's steps before its checkpoint were not timed since started_at.
    if (started && updated && job.current_step > 0 && !job.resume_count) {
      const seconds = (updated - started) / 1000 / job.current_step;
      return { seconds, source: "average", why: `average since the start, model loading included: ${formatStep(seconds)} a step` };
    }
    return null;
  }

  /** A step's time: milliseconds below a second (tiny models take a few). */
  function formatStep(seconds) {
    return seconds < 1 ? `${Math.max(1, Math.round(seconds * 1000))} ms` : formatSeconds(seconds);
  }

  function formatClock(seconds) {
    const total = Math.max(0, Math.round(seconds));
    if (total < 60) return `${total} s`;
    const minutes = Math.floor(total / 60);
    if (minutes < 60) return `${minutes} min ${String(total % 60).padStart(2, "0")} s`;
    return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
  }

  /** Elapsed and remaining time on the progress bar, and the latest tokens/s. */
  function renderTime() {
    const job = state.job;
    const remaining = $("job-remaining");
    const source = $("job-remaining-source");
    const rate = state.rates.tokens_per_second;
    $("job-tokens-rate").textContent = rate === undefined ? "—" : formatRate(rate);
    $("job-tokens-rate").title = rate === undefined ? "" : "Real (not padding) tokens a second over the latest logging window";
    const started = job && parseTime(job.started_at);
    if (!job || !started || ["pending", "queued"].includes(job.status)) {
      $("job-elapsed").textContent = "—";
      remaining.textContent = job && ["pending", "queued"].includes(job.status) ? "not started" : "—";
      remaining.dataset.source = "";
      source.textContent = "";
      return;
    }
    const finished = FINISHED.has(job.status);
    const end = finished ? parseTime(job.completed_at) || parseTime(job.updated_at) : new Date();
    const elapsed = Math.max(0, (end - started) / 1000);
    $("job-elapsed").textContent = formatClock(elapsed);
    $("job-elapsed").dataset.seconds = String(Math.round(elapsed));
    if (finished) {
      remaining.textContent = job.status === "completed" ? "none" : "—";
      remaining.dataset.source = "finished";
      source.textContent = `(${job.status})`;
      return;
    }
    const left = Math.max(0, (job.total_steps || 0) - job.current_step);
    const perStep = job.total_steps ? stepSeconds(job) : null;
    if (perStep) {
      remaining.textContent = `about ${formatClock(left * perStep.seconds)}`;
      remaining.dataset.source = perStep.source;
      source.textContent = `(${perStep.why})`;
      return;
    }
    const estimate = Number(sessionStorage.getItem(ESTIMATE_KEY + job.job_id));
    if (estimate > 0) {
      remaining.textContent = `about ${formatClock(Math.max(0, estimate - elapsed))}`;
      remaining.dataset.source = "estimate";
      source.textContent = "(the check's estimate before submitting; measured once steps are timed)";
      return;
    }
    remaining.textContent = "measuring…";
    remaining.dataset.source = "";
    source.textContent = "(from the time of the first steps)";
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
        if (job && job.job_id === id && job.status === "cancelled") refreshAfterCancel(id);
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

  /**
   * A job cancelled elsewhere (the CLI, another page) ends its stream at once, while its
   * worker still finishes the step and saves a checkpoint (up to 30 s): read the job and
   * its checkpoints again a few times, so the page shows the step the checkpoint holds.
   */
  function refreshAfterCancel(id) {
    for (const delay of [2000, 6000, 15000, 35000]) {
      state.timers.push(
        setTimeout(async () => {
          if (location.hash !== `#/jobs/${id}`) return;
          try {
            renderJob(await api(`/api/training/jobs/${id}`));
          } catch {
            return;
          }
          loadCheckpoints(id);
        }, delay),
      );
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
    state.series = { loss: [], eval_loss: [], learning_rate: [], reward: [], grad_norm: [] };
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
    if (typeof row.tokens_per_second === "number") renderTime();
    // Preference runs: the reward margin of chosen over rejected answers; GRPO runs: the
    // mean reward of the sampled answers. The chart appears with the first such value.
    for (const [source, caption] of REWARD_SERIES) {
      if (typeof row[source] === "number" && Number.isFinite(row[source])) {
        row = { ...row, reward: row[source] };
        $("chart-reward-caption").textContent = caption;
        $("chart-reward-figure").hidden = false;
        break;
      }
    }
    // The median gradient norm of each logging window (health checks add it to the row).
    const gradNorm = row.grad_norm_median;
    if (typeof gradNorm === "number" && Number.isFinite(gradNorm)) {
      $("chart-grad-norm-figure").hidden = false;
    }
    for (const key of ["loss", "eval_loss", "learning_rate", "reward", "grad_norm"]) {
      const y = key === "grad_norm" ? gradNorm : row[key];
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
      const series = state.series || {
        loss: [], eval_loss: [], learning_rate: [], reward: [], grad_norm: [],
      };
      drawLineChart($("chart-loss"), series.loss, { color: "#2563eb" });
      drawLineChart($("chart-eval-loss"), series.eval_loss, { color: "#d97706" });
      drawLineChart($("chart-lr"), series.learning_rate, { color: "#059669" });
      drawLineChart($("chart-reward"), series.reward, { color: "#7c3aed" });
      drawLineChart($("chart-grad-norm"), series.grad_norm, { color: "#0891b2" });
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
