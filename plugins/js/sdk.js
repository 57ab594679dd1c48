// cascade:policy for JavaScript: what a policy written in JavaScript imports from "cascade_policy".
//
// A policy is one ES module that exports one of
//
//     decide(image, request) -> Decision        // a router
//     scoreText(lines) -> number | undefined     // a text scorer
//     fuse(scores: {name: score}) -> number      // a fuser
//
// and optionally configure(params), NAME, VERSION and PARAMS_SCHEMA (an object, the JSON Schema
// subset the host checks parameters against). `cascade policy build FILE.js` turns it into a
// component (componentize-js); the host loads it like any Rust one.
//
// The host's primitives (routers only) run models on the request's image; results are memoised
// per request. A primitive that fails throws a HostError (`kind` is the contract's error case:
// "unknown-model", "engine", "deadline-exceeded", ...). Anything thrown out of decide, scoreText or
// fuse - an Error or any other value - becomes the contract's `component` error with its text.
//
// The build puts the host's imports where the next line is (a router's world has them).
// @@HOST@@
const POLICY_FILE = "@@FILE@@";

// The engine keeps a `fetch` whose network half is left out of the component: calling it would
// trap the instance. A policy gets a plain error instead.
globalThis.fetch = () => {
  throw new Error("fetch is not available to policies (no network inside a component)");
};

export class Decision {
  constructor(prediction, stage, reason = "") {
    this.prediction = prediction;
    this.stage = stage;
    this.reason = reason;
  }
}

const KINDS = [
  "unknown-model", "wrong-kind", "engine", "deadline-exceeded", "invalid-argument", "unbound-role", "component",
];

export class HostError extends Error {
  constructor(kind, message = "") {
    if (!KINDS.includes(kind)) throw new TypeError(`unknown error kind ${JSON.stringify(kind)}; one of ${KINDS.join(", ")}`);
    super(message ? `${kind}: ${message}` : kind);
    this.name = "HostError";
    this.kind = kind;
    this.detail = message;
  }

  static fromWit(e) {
    return new HostError(KINDS.includes(e?.tag) ? e.tag : "component", typeof e?.val === "string" ? e.val : "");
  }

  toWit() {
    return this.kind === "deadline-exceeded" ? { tag: this.kind } : { tag: this.kind, val: this.detail };
  }
}

function host(f, ...args) {
  try {
    return f(...args);
  } catch (e) {
    if (e && typeof e === "object" && "payload" in e) throw HostError.fromWit(e.payload);
    throw e;
  }
}

function need(module, what) {
  if (!module) throw new HostError("invalid-argument", `${what} is for routers only`);
  return module;
}

/** The model's classification: `.score` is P(its positive labels), `.top` the labels with theirs. */
export function classify(model, image) {
  return host(need(primitives, "classify").classify, model, image);
}

/** Detections at or above minConfidence, of the named classes only when `classes` is given. */
export function detect(model, image, minConfidence = 0.25, classes = []) {
  const p = need(primitives, "detect");
  return classes.length
    ? host(p.detectClasses, model, image, minConfidence, classes)
    : host(p.detect, model, image, minConfidence);
}

/** The text lines an OCR model reads ({text, confidence, region}). */
export function readText(model, image) {
  return host(need(primitives, "readText").readText, model, image);
}

/** The embedding of the image (a Float32Array or an array of numbers). */
export function embed(model, image) {
  return host(need(primitives, "embed").embed, model, image);
}

/** A vision-language model's answer to a question about the image. */
export function ask(model, image, prompt) {
  return host(need(primitives, "ask").ask, model, image, prompt);
}

/** `ask` with P(yes) for a yes/no question ({text, pYes, source}). */
export function askScore(model, image, prompt) {
  return host(need(primitives, "askScore").askScore, model, image, prompt);
}

/** Milliseconds left of the request's time budget. */
export function remainingMs() {
  return need(primitives, "remainingMs").remainingMs();
}

/** The hotkey's text scorer over OCR lines; undefined when the text carries no evidence. */
export function scoreText(lines) {
  return host(need(roles, "scoreText").scoreText, lines);
}

/** The hotkey's fuser over named scores ({roadwork: 0.8, ...}). */
export function fuse(scores) {
  const named = Object.entries(scores).map(([name, score]) => ({ name, score }));
  return host(need(roles, "fuse").fuse, named);
}

function describe(e) {
  if (e instanceof Error) {
    const where = (e.stack || "").split("\n").find((l) => l.includes(POLICY_FILE)) || "";
    const line = where.match(/:(\d+):\d+\)?$/);
    return `${e.name}: ${e.message}${line ? ` (${POLICY_FILE}:${line[1]})` : ""}`;
  }
  let text;
  try {
    text = JSON.stringify(e);
  } catch {
    text = undefined;
  }
  return `a non-Error value was thrown: ${text ?? String(e)}`;
}

function witError(e) {
  return e instanceof HostError ? e.toWit() : { tag: "component", val: describe(e) };
}

function number(v, what) {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new TypeError(`${what} must be a finite number, not ${String(v)}`);
  return v;
}

/** The exported interfaces around the policy module (used by the build's entry module). */
export function exportsFor(policy, role) {
  const meta = {
    info() {
      let schema = policy.PARAMS_SCHEMA ?? { type: "object" };
      if (typeof schema !== "string") schema = JSON.stringify(schema);
      return { name: String(policy.NAME ?? "js-policy"), version: String(policy.VERSION ?? "0.1.0"), paramsSchema: schema };
    },
    configure(params) {
      if (typeof policy.configure !== "function") return;
      try {
        policy.configure(JSON.parse(params));
      } catch (e) {
        throw { payload: describe(e) };
      }
    },
  };
  if (role === "router") {
    return {
      meta,
      router: {
        decide(img, req) {
          try {
            const d = policy.decide(img, { hotkey: req.hotkey, budgetMs: req.budgetMs });
            if (!(d instanceof Decision)) throw new TypeError("decide must return a Decision");
            const p = number(d.prediction, "the prediction");
            if (p < 0 || p > 1) throw new RangeError(`the prediction ${p} is outside [0, 1]`);
            return { prediction: p, stage: String(d.stage), reason: String(d.reason) };
          } catch (e) {
            throw { payload: witError(e) };
          }
        },
      },
    };
  }
  if (role === "text-scorer") {
    return {
      meta,
      textScorer: {
        scoreText(lines) {
          try {
            const s = policy.scoreText(lines);
            return s === undefined || s === null ? undefined : number(s, "the text score");
          } catch (e) {
            throw { payload: witError(e) };
          }
        },
      },
    };
  }
  return {
    meta,
    fuser: {
      fuse(scores) {
        try {
          const named = {};
          for (const s of scores) named[s.name] = s.score;
          return number(policy.fuse(named), "the fused score");
        } catch (e) {
          throw { payload: witError(e) };
        }
      },
    },
  };
}
