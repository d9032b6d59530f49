// Prints one value of a saved automerge document as JavaScript sees it, as JSON
// `{"type": <typeof>, "value": <value>}`. Run by park-model's `js_compat` test:
//
//   node tests/compat/print-field.mjs FILE KEY [KEY...]
//
// e.g. `print-field.mjs dir.automerge people p-1 name`.
import { readFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";

const [file, ...path] = process.argv.slice(2);
if (!file || path.length === 0) {
  console.error("usage: node print-field.mjs FILE KEY [KEY...]");
  process.exit(2);
}
let value = Automerge.load(readFileSync(file));
for (const key of path) {
  if (value === undefined || value === null) {
    console.error(`no ${path.join(".")}: nothing at ${key}`);
    process.exit(1);
  }
  value = value[key];
}
const type = Array.isArray(value) ? "array" : typeof value;
const immutable = value instanceof Automerge.ImmutableString;
console.log(JSON.stringify({ type, immutableString: immutable, value: immutable ? value.toString() : value }));
