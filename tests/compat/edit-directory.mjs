// Edits a saved smartpark park directory the way the web app does, with
// @automerge/automerge: plain JavaScript strings (stored as automerge Text) and
// whole numbers (stored as Int). Strings that Rust wrote are atomic values, which
// JavaScript reads as ImmutableString: compare them through String(...). Run by park-model's `js_compat` test:
//
//   node tests/compat/edit-directory.mjs IN OUT
//
// IN is a directory saved by Rust; OUT receives the edited document. The ids below
// are those of the fixture that the test writes.
import { readFileSync, writeFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node edit-directory.mjs IN OUT");
  process.exit(2);
}

const ENTERPRISE = "ent-1";
const GROUP = "grp-lobby";
const CREDENTIAL_TO_SUSPEND = "card-to-suspend";
const LEASE = "lease-1";
// 2026-07-01 00:00 in the park (UTC+8), in microseconds since the epoch.
const NEW_LEASE_END = Date.UTC(2026, 5, 30, 16, 0, 0) * 1000;
// 2026-06-01 00:00 in the park.
const NEW_CARD_VALID_FROM = Date.UTC(2026, 4, 31, 16, 0, 0) * 1000;

let doc = Automerge.load(readFileSync(input));
// Rust writes strings as atomic values, which JavaScript reads as ImmutableString.
if (String(doc.doc_type) !== "park_directory") {
  console.error(`not a park directory: doc_type is ${JSON.stringify(doc.doc_type)}`);
  process.exit(1);
}
for (const [collection, id] of [["credentials", CREDENTIAL_TO_SUSPEND], ["leases", LEASE],
                                ["enterprises", ENTERPRISE], ["access_groups", GROUP]]) {
  if (!doc[collection][id]) {
    console.error(`the fixture has no ${collection} ${id}`);
    process.exit(1);
  }
}

doc = Automerge.change(doc, { message: "web app: new staff member and card" }, (d) => {
  d.people["js-person-1"] = {
    name: "王芳",
    enterprise_id: ENTERPRISE,
    status: "active",
    access_group_ids: [GROUP],
    phone: "+86 138 0000 0001",
  };
  d.credentials["js-card-1"] = {
    person_id: "js-person-1",
    kind: "card",
    value: "JS-CARD-0001",
    status: "active",
    valid_from: NEW_CARD_VALID_FROM,
  };
});
doc = Automerge.change(doc, { message: "web app: suspend a card" }, (d) => {
  d.credentials[CREDENTIAL_TO_SUSPEND].status = "suspended";
});
doc = Automerge.change(doc, { message: "web app: lease ends early" }, (d) => {
  d.leases[LEASE].valid_to = NEW_LEASE_END;
});

writeFileSync(output, Automerge.save(doc));
console.log(JSON.stringify({ heads: Automerge.getHeads(doc) }));
