/* The OpenPik playground: signs PICPIK requests in the browser and shows their results.
 *
 * The PrivateKey never leaves this page: it is read from its input when a request is
 * signed, and nothing is written to storage. Every request is the same signed POST /
 * any other client sends; a task's progress comes from the same signed GET /events.
 */
"use strict";

/* Signing (spec section 2), a port of openpik/signing.py; tests/test_playground.py checks
 * it against the spec's vectors and against Python on tricky bodies.
 *
 * The gateway signs what it parsed from JSON.stringify's text, so numbers must print as
 * Python prints that text's value: integral values as integer digits, others as the
 * shortest round-trip decimal without exponent.
 */
const openpik = (() => {
  /* Python sorts str by code point; JS's default sort compares UTF-16 units, which puts
   * astral characters (surrogate pairs) before U+E000..U+FFFF. */
  function compareCodePoints(a, b) {
    const left = a[Symbol.iterator]();
    const right = b[Symbol.iterator]();
    for (;;) {
      const x = left.next();
      const y = right.next();
      if (x.done || y.done) return (x.done ? 0 : 1) - (y.done ? 0 : 1);
      const diff = x.value.codePointAt(0) - y.value.codePointAt(0);
      if (diff !== 0) return diff;
    }
  }

  /* JSON.stringify writes integral values below 1e21 as their digits, which Python reads
   * as that int; larger ones get an exponent, Python reads a float and prints its exact
   * integer value, which is what BigInt gives. */
  function formatNumber(value) {
    if (!Number.isFinite(value)) throw new RangeError(`${value} is not a JSON number`);
    if (Number.isInteger(value)) return Math.abs(value) < 1e21 ? String(value) : BigInt(value).toString();
    return positional(String(value));
  }

  /* String() gives the shortest round-trip digits, as Python's repr, but with an exponent
   * below 1e-6 ("1.5e-7"); rewrite those digits positionally, as Python's Decimal does. */
  function positional(text) {
    const match = /^(-?)(\d+)(?:\.(\d+))?e([+-]\d+)$/.exec(text);
    if (!match) return text;
    const [, sign, whole, fraction = "", exponent] = match;
    const digits = whole + fraction;
    const point = whole.length + Number(exponent);
    if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`;
    if (point >= digits.length) return sign + digits + "0".repeat(point - digits.length);
    return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
  }

  function serialize(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    if (typeof value === "boolean") return value ? "true" : "false";
    if (typeof value === "number") return formatNumber(value);
    if (Array.isArray(value)) return value.map(serialize).join("");
    if (typeof value === "object") return serializeMapping(value);
    throw new TypeError(`cannot sign a value of type ${typeof value}`);
  }

  function serializeMapping(mapping) {
    return Object.keys(mapping).sort(compareCodePoints).map((key) => key + serialize(mapping[key])).join("");
  }

  function stringToSign(body, privateKey) {
    const fields = Object.fromEntries(Object.entries(body).filter(([key]) => key !== "Signature"));
    return serializeMapping(fields) + privateKey;
  }

  async function sign(body, privateKey) {
    const bytes = new TextEncoder().encode(stringToSign(body, privateKey));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", bytes));
    return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  return { compareCodePoints, formatNumber, serialize, stringToSign, sign };
})();
window.openpik = openpik;

/* ---- the page ------------------------------------------------------------------------ */

const $ = (id) => document.getElementById(id);
const catalog = { mains: [], loras: [], controlnets: [], processors: [], resolutions: {}, presets: [] };

class ApiError extends Error {}

/* One signed action through POST / (relative, so a gateway behind a path prefix works). */
async function call(action, fields = {}) {
  if (!window.isSecureContext) {
    throw new ApiError("Browsers offer SHA-1 only to secure pages: open this one over HTTPS or on localhost.");
  }
  const body = { Action: action, PublicKey: $("public-key").value, ...fields };
  body.Signature = await openpik.sign(body, $("private-key").value);
  const answer = await post(JSON.stringify(body));
  if (answer.RetCode !== 0) throw new ApiError(`RetCode ${answer.RetCode}: ${answer.Message}`);
  return answer;
}

/* The JSON envelope; a network failure or a non-JSON answer (a proxy's error page) is an ApiError too. */
async function post(text) {
  let response;
  try {
    response = await fetch(new URL("./", location.href), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: text,
    });
  } catch (error) {
    throw new ApiError(`the gateway cannot be reached (${error.message})`);
  }
  try {
    return await response.json();
  } catch {
    throw new ApiError(`HTTP ${response.status}: not a JSON answer`);
  }
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = String(value);
  element.textContent = text;
  return element;
}

function numberInput(id, value, { min, max, step }) {
  const input = document.createElement("input");
  return Object.assign(input, { id, type: "number", value: String(value), min: String(min), max: String(max),
    step: String(step) });
}

function labelled(text, control) {
  const label = document.createElement("label");
  label.append(`${text} `, control);
  return label;
}

/* ---- catalog ---- */

async function connect(event) {
  event.preventDefault();
  await guarded(async () => {
    const [models, controlnets, processors] = await Promise.all(
      [call("ListModels"), call("ListControlNets"), call("ListControlNetProcessor")]);
    catalog.mains = Object.values(models.MainModels);
    catalog.loras = Object.values(models.LoraModels);
    catalog.controlnets = processors.ModelList;
    catalog.processors = processors.ControlNetProcessorList;
    catalog.resolutions = Object.fromEntries(Object.values(controlnets.PreProcessors)
      .map((p) => [p.ModelCode, p.InferenceParams.Resolution]));
    catalog.presets = processors.PresetList;
    showCatalog();
    $("generate-form").hidden = false;
    setStatus(`Connected: ${catalog.mains.length} models, ${catalog.loras.length} LoRAs.`);
  });
}

function showCatalog() {
  $("model").replaceChildren(...catalog.mains.map((m) => option(m.Id, `${m.Name} (${m.ModelCode})`)));
  $("loras").replaceChildren(...catalog.loras.map(loraRow));
  $("control").replaceChildren(
    option("", "none"),
    ...catalog.presets.map((p) => option(`preset:${p.Id}`, `preset ${p.Id}: ${p.Name}`)),
    option("custom", "custom unit"),
  );
  $("control-model").replaceChildren(
    ...catalog.controlnets.map((c) => option(c.Id, `${c.Name} (${c.ModelCode})`)));
  $("preprocessor").replaceChildren(...catalog.processors.map((p) => option(p.Id, p.Name)));
  applyModelDefaults();
  showControl();
  showPreprocessorParams();
}

function loraRow(lora) {
  const row = document.createElement("div");
  row.className = "lora";
  const enabled = Object.assign(document.createElement("input"), { type: "checkbox", id: `lora-${lora.Id}` });
  const weight = numberInput(`lora-weight-${lora.Id}`, lora.InferenceParams.LoraWeight,
    { min: -1, max: 2, step: 0.05 });
  const triggers = lora.TriggerWordList.length ? ` (trigger: ${lora.TriggerWordList.join(", ")})` : "";
  row.append(labelled(`${lora.Name}${triggers}`, enabled), labelled("weight", weight));
  return row;
}

/* A main model's InferenceParams and native size, as ListModels gives them. */
function applyModelDefaults() {
  const model = catalog.mains.find((m) => String(m.Id) === $("model").value);
  if (!model) return;
  const defaults = { ...model.InferenceParams, Width: model.Width, Height: model.Height };
  const inputs = { Steps: "steps", CFGScale: "cfg-scale", ClipSkip: "clip-skip", Width: "width", Height: "height" };
  for (const [name, id] of Object.entries(inputs)) $(id).value = String(defaults[name]);
  if ([...$("sampler").options].some((o) => o.value === defaults.Sampler)) $("sampler").value = defaults.Sampler;
}

function showControl() {
  const choice = $("control").value;
  $("control-fields").hidden = choice === "";
  $("custom-unit").hidden = choice !== "custom";
}

function showPreprocessorParams() {
  const processor = catalog.processors.find((p) => String(p.Id) === $("preprocessor").value);
  const fields = [];
  if (processor && processor.HasResolution) {
    const resolution = catalog.resolutions[processor.ModelCode];
    fields.push(labelled("Resolution", numberInput("preprocessor-resolution", resolution,
      { min: 64, max: 2048, step: 64 })));
  }
  (processor ? processor.Params : []).forEach((param, i) => {
    fields.push(labelled(param.ParamName, numberInput(`param${i + 1}`, param.ParamDefaultValue,
      { min: param.MiniMum, max: param.MaxiMum, step: param.Step })));
  });
  $("preprocessor-params").replaceChildren(...fields);
}

/* ---- the request ---- */

/* A chosen file as bare base64 (the data: URL prefix removed), or "" when none is chosen. */
function readBase64(input) {
  const file = input.files[0];
  if (!file) return Promise.resolve("");
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] ?? "");
    reader.onerror = () => reject(new ApiError(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

const num = (id) => Number($(id).value);

function chosenLoras() {
  return catalog.loras.filter((l) => $(`lora-${l.Id}`).checked)
    .map((l) => ({ SubModelId: l.Id, ControlWeight: num(`lora-weight-${l.Id}`) }));
}

function prompts(id) {
  const text = $(id).value.trim();
  return text ? [text] : [];
}

async function controlUnit(reference) {
  const choice = $("control").value;
  if (!choice) return null;
  const image = (await readBase64($("control-image"))) || reference;
  if (!image) throw new ApiError("ControlNet: choose a control image or a reference image");
  const unit = { ControlNetImg: image, ControlWeight: num("control-weight") };
  if (choice.startsWith("preset:")) return { ...unit, ControlPreSetId: Number(choice.slice("preset:".length)) };
  const custom = {
    ...unit, ControlPreSetId: 0, ModelId: num("control-model"), PreProcessorId: num("preprocessor"),
    StartingControlStep: num("control-start"), EndingControlStep: num("control-end"),
    ControlMode: $("control-mode").value, ResizeMode: $("resize-mode").value,
  };
  if ($("preprocessor-resolution")) custom.PreProcessorResolution = num("preprocessor-resolution");
  if ($("param1")) custom.Param1Value = num("param1");
  if ($("param2")) custom.Param2Value = num("param2");
  return custom;
}

async function generateBody() {
  const model = catalog.mains.find((m) => String(m.Id) === $("model").value);
  const loras = chosenLoras();
  const reference = await readBase64($("reference"));
  const unit = await controlUnit(reference);
  const body = {
    ModelType: model.IsOfficial ? "combined_model" : "custom_model", MainModelId: model.Id,
    SubModelIds: loras.map((l) => l.SubModelId), SubModelParams: loras,
    BatchSize: num("batch-size"), Steps: num("steps"), CfgScale: num("cfg-scale"), Seed: num("seed"),
    Sampler: $("sampler").value, Width: num("width"), Height: num("height"), ClipSkip: num("clip-skip"),
    TranslatePrompt: false, PositivePrompts: prompts("positive"), NegativePrompts: prompts("negative"),
    EnableControlNet: unit !== null, ControlNetParams: unit ? [unit] : [],
  };
  if (!reference) return ["GenerateTxt2Img", body];
  return ["GenerateImg2Img", { ...body, ReferenceImage: reference, ReferenceScale: num("reference-scale") }];
}

async function generate(event) {
  event.preventDefault();
  await guarded(async () => {
    $("submit").disabled = true;
    $("results").replaceChildren();
    const [action, body] = await generateBody();
    const { TaskUID } = await call(action, body);
    showResults(await follow(TaskUID));
  }).finally(() => { $("submit").disabled = false; });
}

/* Follows a task through GET /events (server-sent events) to its final event, which carries
 * its ListTasksDetails item. The browser reconnects by itself after a network drop; when a
 * stream that was working is refused later (its signed Timestamp has left the window), a
 * freshly signed one takes over. A stream refused before any event: the RetCode is found. */
async function follow(taskUid) {
  $("progress").hidden = false;
  for (;;) {
    const { item, heard } = await stream(taskUid);
    if (item) {
      showProgress(taskUid, { TaskStatus: item.Status, Progress: item.Progress, QueuePosition: null });
      if (item.Status === "Error") throw new ApiError(`Error ${item.ErrorCode}: ${item.ErrorMessage}`);
      return item;
    }
    if (!heard) return diagnose(taskUid);
  }
}

/* The stream's URL: its query is signed like a body of the same fields (spec section 11). */
async function eventsUrl(taskUid) {
  const query = {
    Action: "TaskEvents", PublicKey: $("public-key").value, TaskUID: taskUid, Timestamp: Math.floor(Date.now() / 1000),
  };
  query.Signature = await openpik.sign(query, $("private-key").value);
  return new URL(`events?${new URLSearchParams(query)}`, new URL("./", location.href));
}

/* One EventSource, until the task's final event ({ item }) or until the browser gives up on
 * the connection ({ heard }: whether any event came). */
async function stream(taskUid) {
  const source = new EventSource(await eventsUrl(taskUid));
  let heard = false;
  return new Promise((resolve) => {
    const end = (outcome) => {
      source.close();
      resolve(outcome);
    };
    source.addEventListener("progress", (event) => {
      heard = true;
      showProgress(taskUid, JSON.parse(event.data));
    });
    source.addEventListener("finished", (event) => end({ item: JSON.parse(event.data) }));
    source.addEventListener("error", (event) => {
      if (event instanceof MessageEvent) end({ item: JSON.parse(event.data) }); // the task's own "error" event
      else if (source.readyState === EventSource.CLOSED) end({ heard });
    });
  });
}

/* A refused stream's answer cannot be read from an EventSource; the same signed question
 * through POST / shows its RetCode (call throws it). */
async function diagnose(taskUid) {
  await call("ListTasksDetails", { TaskUIDList: [taskUid] });
  throw new ApiError("the progress stream (GET /events) could not be opened: is a proxy blocking it?");
}

function showProgress(taskUid, { TaskStatus, Progress, QueuePosition }) {
  const queued = QueuePosition ? `, position ${QueuePosition} in the queue` : "";
  setStatus(`Task ${taskUid}: ${TaskStatus} ${Progress}%${queued}`);
  $("progress").value = Progress;
}

/* Result URLs carry the gateway's public URL; the page loads them from its own origin,
 * which is all its Content-Security-Policy allows. */
function localUrl(url) {
  return new URL(new URL(url, location.href).pathname, location.href).href;
}

function showResults(detail) {
  $("results").replaceChildren(...detail.ImgList.map((url, i) => {
    const src = localUrl(url);
    const name = `${detail.TaskUID}-${src.split("/").pop()}`;
    const image = Object.assign(document.createElement("img"), { src, alt: `result ${i + 1}` });
    const link = Object.assign(document.createElement("a"), { href: src, download: name, textContent: name });
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.append(link);
    figure.append(image, caption);
    return figure;
  }));
}

/* ---- status and errors ---- */

function setStatus(text) {
  $("status").textContent = text;
}

/* Runs one user action; API and input errors are shown, anything else is a bug and rethrown. */
async function guarded(action) {
  $("error").textContent = "";
  try {
    await action();
  } catch (error) {
    $("error").textContent = error.message;
    if (!(error instanceof ApiError)) throw error;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("keys-form").addEventListener("submit", connect);
  $("generate-form").addEventListener("submit", generate);
  $("model").addEventListener("change", applyModelDefaults);
  $("control").addEventListener("change", showControl);
  $("preprocessor").addEventListener("change", showPreprocessorParams);
});
