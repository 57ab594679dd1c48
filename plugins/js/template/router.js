// A router in JavaScript: classify once, look again at the mirror image when unsure.
//
// Build: `cascade policy build plugins/js/template/router.js`; bind it in a hotkey file:
//
//     [router]
//     component = "js-template-router@^0"
//     params = { model = "roadwork", unsure = [0.25, 0.75] }

import { Decision, HostError, classify, fuse } from "cascade_policy";

export const NAME = "js-template-router";
export const VERSION = "0.1.0";
export const PARAMS_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["model"],
  properties: {
    model: { type: "string" },
    unsure: { type: "array", minItems: 2, maxItems: 2, items: { type: "number", minimum: 0, maximum: 1 } },
  },
};

let MODEL = "roadwork";
let LOW = 0.25;
let HIGH = 0.75;

// Called once per instance with the hotkey's parameters, already checked against the schema.
export function configure(params) {
  MODEL = params.model;
  if (params.unsure) {
    [LOW, HIGH] = params.unsure;
    if (!(LOW <= HIGH)) throw new RangeError(`unsure: ${LOW} is above ${HIGH}`);
  }
}

export function decide(image, request) {
  const first = classify(MODEL, image).score;
  if (first <= LOW || first >= HIGH) return new Decision(first, "classifier", `${MODEL}=${first.toFixed(3)}`);
  const second = classify(MODEL, image.flipHorizontal()).score;
  let p;
  try {
    p = fuse({ [MODEL]: first, [`${MODEL}:flip`]: second });
  } catch (e) {
    if (!(e instanceof HostError) || e.kind !== "unbound-role") throw e;
    p = (first + second) / 2; // no fuser bound for this hotkey: the mean
  }
  return new Decision(p, "classifier-flip", `${MODEL}=${first.toFixed(3)} flip=${second.toFixed(3)}`);
}
