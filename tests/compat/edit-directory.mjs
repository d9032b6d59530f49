// Edits a saved smartpark park directory the way the web app does, with
// @automerge/automerge: plain JavaScript strings (stored as automerge Text) and
// whole numbers (stored as Int). Strings that Rust wrote are atomic values, which
// JavaScript reads as ImmutableString: compare them through String(...). Run by park-model's `js_compat` test:
//
//   node tests/compat/edit-directory.mjs IN OUT KEY
//
// IN is a directory saved by Rust; OUT receives the edited document; KEY is the park's
// credential key as 64 hex digits. A card is stored as the keyed digest of its number
// (HMAC-SHA256, computed here with node:crypto as park-model's keyed_digest does) and its
// last four characters, never the number. A second change plays an app built before
// that (schema version 1): it writes a card number in clear and a phone number, which
// Rust refuses to use until it rewrites them. The ids below are those of the fixture
// that the test writes.
import { createHmac } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as Automerge from "@automerge/automerge";

const [input, output, keyHex] = process.argv.slice(2);
if (!input || !output || !/^[0-9a-fA-F]{64}$/.test(keyHex ?? "")) {
  console.error("usage: node edit-directory.mjs IN OUT KEY (64 hex digits)");
  process.exit(2);
}

// park-model's identity::secret::keyed_digest: 128 bits of HMAC-SHA256 over
// "smartpark-keyed-digest-v1\0" + domain + "\0" + value, URL-safe base64, prefixed "h1:".
function keyedDigest(domain, value) {
  const tag = createHmac("sha256", Buffer.from(keyHex, "hex"))
    .update(`smartpark-keyed-digest-v1\0${domain}\0${value}`, "utf8")
    .digest();
  return "h1:" + tag.subarray(0, 16).toString("base64url");
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
  };
  d.credentials["js-card-1"] = {
    person_id: "js-person-1",
    kind: "card",
    digest: keyedDigest("card", "JS-CARD-0001"),
    suffix: "0001",
    status: "active",
    valid_from: NEW_CARD_VALID_FROM,
  };
});
doc = Automerge.change(doc, { message: "old web app: a card in clear and a phone" }, (d) => {
  d.credentials["js-legacy-card"] = {
    person_id: "js-person-1",
    kind: "card",
    value: "JS-LEGACY-0002",
    status: "active",
  };
  d.people["js-person-1"].phone = "+86 138 0000 0001";
});
doc = Automerge.change(doc, { message: "web app: suspend a card" }, (d) => {
  d.credentials[CREDENTIAL_TO_SUSPEND].status = "suspended";
});
doc = Automerge.change(doc, { message: "web app: lease ends early" }, (d) => {
  d.leases[LEASE].valid_to = NEW_LEASE_END;
});

writeFileSync(output, Automerge.save(doc));
console.log(JSON.stringify({ heads: Automerge.getHeads(doc) }));
