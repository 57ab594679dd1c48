// The shipped `accuracy` router re-written in JavaScript: ordered classifier stages, each fused by
// the hotkey's fuser, with an early exit below `exit_low` or above `exit_high` - the subset of
// `cascade-router`'s parameters that policies/accuracy.toml uses, with the same meaning. The
// Python copy is examples/python/accuracy/router.py; `router-bench` times all three languages on
// the same decision.

import { Decision, HostError, classify, fuse, remainingMs } from "cascade_policy";

export const NAME = "js-accuracy-router";
export const VERSION = "0.1.0";
export const PARAMS_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["stages"],
  properties: {
    tie_break: { type: "string", enum: ["up", "down"] },
    stages: {
      type: "array",
      items: {
        type: "object",
        additionalProperties: false,
        required: ["name", "classify"],
        properties: {
          name: { type: "string" },
          classify: { type: "array", items: { type: "string" } },
          flip: { type: "boolean" },
          exit_low: { type: "number", minimum: 0, maximum: 1 },
          exit_high: { type: "number", minimum: 0, maximum: 1 },
          on_error: { type: "string", enum: ["skip", "fail"] },
          min_budget_ms: { type: "integer", minimum: 0 },
        },
      },
    },
  },
};

let STAGES = [];
let TIE = 0.499;

// Three decimals, half away from zero, as the Rust router writes them.
function fixed3(v) {
  const m = Math.floor(Math.abs(v) * 1000 + 0.5);
  return `${v < 0 && m ? "-" : ""}${Math.floor(m / 1000)}.${String(m % 1000).padStart(3, "0")}`;
}

export function configure(params) {
  STAGES = params.stages.map((s) => ({ ...s }));
  if (STAGES.length === 0) throw new RangeError("stages: at least one stage is needed");
  STAGES.forEach((s, i) => {
    if (s.classify.length === 0) throw new RangeError(`stages[${i}] (${s.name}): nothing to classify`);
    // thresholds as the Rust router holds them (32-bit floats), so they compare alike
    if (s.exit_low !== undefined) s.exit_low = Math.fround(s.exit_low);
    if (s.exit_high !== undefined) s.exit_high = Math.fround(s.exit_high);
    if (s.exit_low !== undefined && s.exit_high !== undefined && s.exit_low >= s.exit_high) {
      throw new RangeError(`stages[${i}] (${s.name}): exit_low ${s.exit_low} must be below exit_high ${s.exit_high}`);
    }
  });
  TIE = params.tie_break === "up" ? 0.501 : 0.499;
}

function fused(evidence) {
  try {
    return fuse(evidence);
  } catch (e) {
    if (!(e instanceof HostError) || e.kind !== "unbound-role") throw e;
    const v = Object.values(evidence);
    return Math.fround(Math.fround(v.reduce((a, b) => a + b, 0)) / v.length); // no fuser bound: the mean
  }
}

export function decide(image, request) {
  const evidence = {};
  const notes = [];
  let flipped = null;
  const last = STAGES.length - 1;
  for (let i = 0; i <= last; i++) {
    const stage = STAGES[i];
    if (stage.min_budget_ms !== undefined) {
      const left = remainingMs();
      if (left < stage.min_budget_ms && i !== last) {
        notes.push(`${stage.name} skipped: ${left} ms left, needs ${stage.min_budget_ms}`);
        continue;
      }
    }
    let target = image;
    if (stage.flip) target = flipped ??= image.flipHorizontal();
    const suffix = stage.flip ? ":flip" : "";
    for (const model of stage.classify) {
      try {
        evidence[model + suffix] = classify(model, target).score;
      } catch (e) {
        if ((stage.on_error ?? "skip") === "fail") throw e;
        notes.push(`classify(${model}) skipped: ${e.detail || e.kind || e.message}`);
      }
    }
    const names = Object.keys(evidence).sort();
    if (names.length === 0) {
      if (i === last) {
        throw new HostError("component", `no evidence after the last stage: ${notes.join("; ") || "no primitive produced a score"}`);
      }
      continue;
    }
    const sorted = Object.fromEntries(names.map((n) => [n, evidence[n]]));
    const f = fused(sorted);
    let kind;
    if (i === last) kind = "final";
    else if (stage.exit_low !== undefined && f <= stage.exit_low) kind = "exit-low";
    else if (stage.exit_high !== undefined && f >= stage.exit_high) kind = "exit-high";
    else continue;
    const shown = names.map((n) => `${n}=${fixed3(evidence[n])}`).join(", ");
    let reason = `${kind} at ${stage.name}: fused ${fixed3(f)} from ${shown}`;
    if (notes.length) reason += ` [${notes.join("; ")}]`;
    const p = Math.min(1, Math.max(0, f));
    return new Decision(p === 0.5 ? TIE : p, stage.name, reason);
  }
}
