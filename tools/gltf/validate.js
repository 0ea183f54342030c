// Khronos glTF validator on one file: prints the report's issue counts and messages as JSON.
// Usage: node tools/gltf/validate.js FILE.glb   (needs the npm package gltf-validator: see the README)
const fs = require("fs");
const path = require("path");
let validator;
for (const base of [path.join(__dirname, "..", "..", ".node", "node_modules"), undefined]) {
  try { validator = require(base ? path.join(base, "gltf-validator") : "gltf-validator"); break; } catch (e) {}
}
if (!validator) { console.error("gltf-validator is not installed"); process.exit(3); }
const file = process.argv[2];
validator.validateBytes(new Uint8Array(fs.readFileSync(file)), { maxIssues: 100 }).then((report) => {
  const i = report.issues;
  console.log(JSON.stringify({ errors: i.numErrors, warnings: i.numWarnings, infos: i.numInfos,
    messages: i.messages.map((m) => `${m.severity} ${m.code} ${m.pointer || ""}: ${m.message}`) }));
}).catch((e) => { console.error(String(e)); process.exit(2); });
