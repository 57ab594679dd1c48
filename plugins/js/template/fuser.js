// A fuser in JavaScript: a weighted mean of the named scores (names without a weight are ignored).
// Build: `cascade policy build plugins/js/template/fuser.js`; bind it with
// `[fuser] component = "js-template-fuser@^0"` and `params.weights = { roadwork = 1.0 }`.

export const NAME = "js-template-fuser";
export const VERSION = "0.1.0";
export const PARAMS_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["weights"],
  properties: { weights: { type: "object", additionalProperties: { type: "number", minimum: 0 } } },
};

let WEIGHTS = {};

export function configure(params) {
  WEIGHTS = params.weights;
  if (!Object.values(WEIGHTS).some((w) => w > 0)) throw new RangeError("weights: at least one weight must be positive");
}

export function fuse(scores) {
  let num = 0;
  let den = 0;
  for (const [name, s] of Object.entries(scores)) {
    if (name in WEIGHTS) {
      num += WEIGHTS[name] * s;
      den += WEIGHTS[name];
    }
  }
  if (den === 0) throw new RangeError(`no weighted score among ${Object.keys(scores).sort().join(", ")}`);
  return Math.min(1, Math.max(0, num / den));
}
