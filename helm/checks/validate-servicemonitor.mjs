// Validates every ServiceMonitor of a rendered manifest file against the prometheus-operator CRD
// schema (the npm package @kubernetes-models/prometheus-operator), which kubernetes-validate
// does not know. Run by scripts/helm-check from its tool cache, where the packages are installed.
//   node validate-servicemonitor.mjs RENDERED.yaml
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

let checked = 0;
let bad = 0;
for (const doc of parseAllDocuments(readFileSync(process.argv[2], "utf8"))) {
  const o = doc.toJS();
  if (!o || o.kind !== "ServiceMonitor") continue;
  checked++;
  try {
    new ServiceMonitor(o).validate();
    console.log(`  ServiceMonitor/${o.metadata.name}: valid`);
  } catch (e) {
    bad++;
    console.log(`  ServiceMonitor/${o.metadata.name}: ${e.message}`);
  }
}
if (checked === 0) {
  console.log("  no ServiceMonitor in the file");
  bad++;
}
process.exit(bad ? 1 : 0);
