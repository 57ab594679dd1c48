// Builds a JavaScript policy module into a cascade:policy component with componentize-js.
//
//     node build.mjs POLICY.js -o OUT.wasm [--wit DIR] [--quiet]
//
// Run by `cascade policy build` (componentize-js from plugins/js/node_modules, installed by
// `make setup` with `npm ci`). Before anything is compiled the file is checked: a syntax error
// (Node's own parser, with the line), an import of anything but "cascade_policy" (a component has
// no modules, files or network: refused with the line), a file that exports no role or several.
// The role comes from the exported function: decide (router), scoreText (text scorer) or fuse
// (fuser). componentize-js then runs the module's top level once at build time (wizer) and
// snapshots the engine into the component; its WASI features for outgoing HTTP and fetch events
// are left out, so `fetch` does not exist inside a policy.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, readdirSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const CONTRACT = join(HERE, "..", "..", "wit", "v1.2.0");
const ROLES = { decide: "router", scoreText: "text-scorer", fuse: "fuser" };
const WORLDS = { router: "router-component", "text-scorer": "text-scorer-component", fuser: "fuser-component" };

class Refused extends Error {}

function args(argv) {
  const a = { source: null, out: null, wit: CONTRACT, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    if (v === "-o" || v === "--out") a.out = argv[++i];
    else if (v === "--wit") a.wit = argv[++i];
    else if (v === "-q" || v === "--quiet") a.quiet = true;
    else if (!a.source) a.source = v;
    else throw new Refused(`unexpected argument ${v}`);
  }
  if (!a.source || !a.out) throw new Refused("usage: node build.mjs POLICY.js -o OUT.wasm [--wit DIR] [--quiet]");
  return a;
}

/** The contract version of a WIT folder (`package cascade:policy@X;`). */
function contractOf(wit) {
  for (const f of readdirSync(wit).filter((n) => n.endsWith(".wit"))) {
    const m = readFileSync(join(wit, f), "utf8").match(/^package cascade:policy@([0-9.]+);/m);
    if (m) return m[1];
  }
  throw new Refused(`${wit}: no \`package cascade:policy@...;\` line`);
}

function check(src, text, tmp) {
  // Node's own parser, as a module whatever the folder's package.json says
  const probe = join(tmp, "syntax-check.mjs");
  writeFileSync(probe, text);
  try {
    execFileSync(process.execPath, ["--check", probe], { stdio: ["ignore", "ignore", "pipe"] });
  } catch (e) {
    const err = String(e.stderr || "");
    const line = err.match(/syntax-check\.mjs:(\d+)/);
    const kind = err.split("\n").find((l) => /Error/.test(l)) || "SyntaxError";
    throw new Refused(`${src}:${line ? line[1] : "?"}: ${kind.trim()}`);
  }
  // every module specifier (import ... from, export ... from, import(), bare import), over lines
  const lineOf = (i) => text.slice(0, i).split("\n").length;
  const specifiers = /(?:\bimport\s*(?:[\w*{}\s,]+?\s*from\s*)?|\bexport\s*[\w*{}\s,]+?\s*from\s*|\bimport\s*\(\s*)["'`]([^"'`]+)["'`]/g;
  for (const m of text.matchAll(specifiers)) {
    if (m[1] !== "cascade_policy") {
      throw new Refused(`${src}:${lineOf(m.index)}: imports ${JSON.stringify(m[1])}; a policy imports only "cascade_policy" (no modules, files or network inside a component)`);
    }
  }
  const req = text.search(/\brequire\s*\(/);
  if (req >= 0) throw new Refused(`${src}:${lineOf(req)}: require() is not available; a policy imports only "cascade_policy"`);
  const exported = (f) =>
    new RegExp(`^export\\s+(?:async\\s+)?(?:function\\*?|const|let|var)\\s+${f}\\b`, "m").test(text) ||
    new RegExp(`^export\\s*\\{[^}]*\\b${f}\\b[^}]*\\}`, "m").test(text);
  const found = Object.keys(ROLES).filter(exported);
  if (found.length === 0) throw new Refused(`${src}: exports none of decide (router), scoreText (text scorer), fuse (fuser)`);
  if (found.length > 1) throw new Refused(`${src}: exports ${found.join(", ")}; a component has one role, so one file per role`);
  if (new RegExp(`^export\\s+async\\s+function\\s+${found[0]}\\b`, "m").test(text)) {
    throw new Refused(`${src}: ${found[0]} is async; the host calls it synchronously, so it must return its answer, not a Promise`);
  }
  return ROLES[found[0]];
}

async function build(a) {
  const src = resolve(a.source);
  if (!/\.m?js$/.test(src)) throw new Refused(`${a.source}: not a JavaScript file`);
  const text = readFileSync(src, "utf8");
  const version = contractOf(a.wit);
  const file = basename(src);
  const tmp = mkdtempSync(join(tmpdir(), "cascade-js-"));
  try {
    const role = check(a.source, text, tmp);
    const hostLines =
      role === "router"
        ? `import * as primitives from "cascade:policy/primitives@${version}";\nimport * as roles from "cascade:policy/roles@${version}";`
        : "const primitives = null, roles = null;";
    const sdk = readFileSync(join(HERE, "sdk.js"), "utf8").replace("// @@HOST@@", hostLines).replace("@@FILE@@", file);
    writeFileSync(join(tmp, "cascade_policy.js"), sdk);
    writeFileSync(join(tmp, file), text.replace(/(from\s*["'`])cascade_policy(["'`])/g, "$1./cascade_policy.js$2"));
    const iface = { router: "router", "text-scorer": "textScorer", fuser: "fuser" }[role];
    writeFileSync(
      join(tmp, "entry.js"),
      `import * as policy from "./${file}";\nimport { exportsFor } from "./cascade_policy.js";\n` +
        `const e = exportsFor(policy, ${JSON.stringify(role)});\nexport const meta = e.meta;\nexport const ${iface} = e.${iface};\n`,
    );
    const { componentize } = await import(join(HERE, "node_modules", "@bytecodealliance", "componentize-js", "src", "componentize.js"));
    let component;
    try {
      ({ component } = await componentize({
        sourcePath: join(tmp, "entry.js"),
        witPath: resolve(a.wit),
        worldName: WORLDS[role],
        disableFeatures: ["http", "fetch-event"],
      }));
    } catch (e) {
      throw new Refused(`${a.source}: componentize-js failed:\n${e.message || e}`);
    }
    const out = resolve(a.out);
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out + ".part", component);
    renameSync(out + ".part", out);
    return role;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  const a = args(process.argv.slice(2));
  const role = await build(a);
  if (!a.quiet) console.log(`${a.out}: ${role} (${statSync(a.out).size} bytes)`);
} catch (e) {
  console.error(`error: ${e instanceof Refused ? e.message : e.stack || e}`);
  process.exit(1);
}
