// `js-misbehave`: a JavaScript router for the host's tests only. It classifies once, then
// misbehaves as its parameters say when the score is above `above`: throws an Error, throws a
// value that is not an Error, loops forever, or calls fetch (which a policy does not have);
// `fail_configure` makes configure throw.

import { Decision, classify } from "cascade_policy";

export const NAME = "js-misbehave";
export const VERSION = "0.1.0";
export const PARAMS_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["model"],
  properties: {
    model: { type: "string" },
    mode: { type: "string", enum: ["none", "error", "value", "loop", "fetch"] },
    above: { type: "number" },
    fail_configure: { type: "boolean" },
  },
};

let P = {};

export function configure(params) {
  if (params.fail_configure) throw new Error("configure refuses on purpose");
  P = params;
}

export function decide(image, request) {
  const score = classify(P.model, image).score;
  const mode = score > (P.above ?? 0) ? (P.mode ?? "none") : "none";
  if (mode === "error") throw new TypeError(`score ${score.toFixed(3)} is too high for this policy`);
  if (mode === "value") throw { code: 7, why: "not an Error" };
  if (mode === "loop") for (;;) {}
  if (mode === "fetch") fetch("http://127.0.0.1:9/");
  return new Decision(score === 0.5 ? 0.499 : score, "classify", `${P.model}=${score.toFixed(3)}`);
}
