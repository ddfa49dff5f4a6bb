// Compile a JSON Schema with ajv (draft 2020-12, strict) and validate instances against it.
// usage: node ajv_check.js SCHEMA.json INSTANCES.json   (INSTANCES: [{"name": ..., "data": ...}])
// prints {"compiled": true, "results": [{"name", "valid", "errors": [{instancePath, keyword, message}]}]}
// or {"compiled": false, "error": "..."}; NODE_PATH must reach ajv (tests set it to .ci/node/node_modules).
"use strict";
const fs = require("fs");
const Ajv2020 = require("ajv/dist/2020").default;
let addFormats = null;
try { addFormats = require("ajv-formats"); } catch (e) { /* formats are optional */ }

const schema = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const instances = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const ajv = new Ajv2020({ strict: true, allErrors: true });
if (addFormats) (addFormats.default || addFormats)(ajv);
let validate;
try {
  validate = ajv.compile(schema);
} catch (e) {
  process.stdout.write(JSON.stringify({ compiled: false, error: String(e.message || e) }));
  process.exit(0);
}
const results = instances.map(({ name, data }) => {
  const valid = validate(data);
  const errors = (validate.errors || []).map(({ instancePath, keyword, message }) => ({ instancePath, keyword, message }));
  return { name, valid, errors };
});
process.stdout.write(JSON.stringify({ compiled: true, results }));
