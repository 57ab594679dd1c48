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

export function configure(params) {
  STAGES = params.stages;
  if (STAGES.length === 0) throw new RangeError("stages: at least one stage is needed");
  for (const s of STAGES) {
    if (s.classify.length === 0) throw new RangeError(`stage ${s.name}: nothing to classify`);
    if ((s.exit_low ?? 0) > (s.exit_high ?? 1)) throw new RangeError(`stage ${s.name}: exit_low is above exit_high`);
  }
  TIE = params.tie_break === "up" ? 0.501 : 0.499;
}

function fused(evidence) {
  try {
    return fuse(evidence);
  } catch (e) {
    if (!(e instanceof HostError) || e.kind !== "unbound-role") throw e;
    const v = Object.values(evidence);
    return v.reduce((a, b) => a + b, 0) / v.length; // no fuser bound: the mean
  }
}

export function decide(image, request) {
  const evidence = {};
  const notes = [];
  let flipped = null;
  const last = STAGES.length - 1;
  for (let i = 0; i <= last; i++) {
    const stage = STAGES[i];
    if (stage.min_budget_ms !== undefined && i !== last && remainingMs() < stage.min_budget_ms) {
      notes.push(`${stage.name} skipped: needs ${stage.min_budget_ms} ms`);
      continue;
    }
    let target = image;
    if (stage.flip) target = flipped ??= image.flipHorizontal();
    const suffix = stage.flip ? ":flip" : "";
    for (const model of stage.classify) {
      try {
        evidence[model + suffix] = classify(model, target).score;
      } catch (e) {
        if ((stage.on_error ?? "skip") === "fail") throw e;
        notes.push(`classify(${model}) skipped: ${e.message}`);
      }
    }
    const names = Object.keys(evidence).sort();
    if (names.length === 0) {
      if (i === last) throw new HostError("component", `no evidence after the last stage: ${notes.join("; ")}`);
      continue;
    }
    const sorted = Object.fromEntries(names.map((n) => [n, evidence[n]]));
    const f = fused(sorted);
    let kind;
    if (i === last) kind = "final";
    else if (stage.exit_low !== undefined && f <= stage.exit_low) kind = "exit-low";
    else if (stage.exit_high !== undefined && f >= stage.exit_high) kind = "exit-high";
    else continue;
    const shown = names.map((n) => `${n}=${evidence[n].toFixed(3)}`).join(", ");
    const p = Math.min(1, Math.max(0, f));
    return new Decision(p === 0.5 ? TIE : p, stage.name, `${kind} at ${stage.name}: fused ${f.toFixed(3)} from ${shown}`);
  }
}
