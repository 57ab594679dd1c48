// A text scorer in JavaScript: OCR lines to evidence of roadwork, undefined when the text says
// nothing. Build: `cascade policy build plugins/js/template/text_scorer.js`; bind it with
// `[text_scorer] component = "js-template-text-scorer@^0"` and `params = { words = [...] }`.

export const NAME = "js-template-text-scorer";
export const VERSION = "0.1.0";
export const PARAMS_SCHEMA = {
  type: "object",
  additionalProperties: false,
  properties: {
    words: { type: "array", items: { type: "string" } },
    min_confidence: { type: "number", minimum: 0, maximum: 1 },
  },
};

let WORDS = ["road work", "roadwork", "work zone", "detour", "road closed", "men at work"];
let MIN_CONFIDENCE = 0.5;

export function configure(params) {
  WORDS = (params.words ?? WORDS).map((w) => w.toLowerCase());
  MIN_CONFIDENCE = params.min_confidence ?? MIN_CONFIDENCE;
}

export function scoreText(lines) {
  const text = lines.filter((l) => l.confidence >= MIN_CONFIDENCE).map((l) => l.text.toLowerCase()).join(" ");
  if (!text.trim()) return undefined;
  return WORDS.some((w) => text.includes(w)) ? 0.95 : undefined;
}
