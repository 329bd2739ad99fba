// Validates every ServiceMonitor (or, with a second argument, every object of that kind:
// PrometheusRule) of a rendered manifest file against the prometheus-operator CRD schemas (the
// npm package @kubernetes-models/prometheus-operator), which kubernetes-validate does not know.
// Run by scripts/helm-check from its tool cache, where the packages are installed.
//   node validate-servicemonitor.mjs RENDERED.yaml [ServiceMonitor|PrometheusRule]
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PrometheusRule };
const kind = process.argv[3] || "ServiceMonitor";
const Model = models[kind];
if (!Model) {
  console.log(`  unknown kind ${kind}`);
  process.exit(1);
}
let checked = 0;
let bad = 0;
for (const doc of parseAllDocuments(readFileSync(process.argv[2], "utf8"))) {
  const o = doc.toJS();
  if (!o || o.kind !== kind) continue;
  checked++;
  try {
    new Model(o).validate();
    console.log(`  ${kind}/${o.metadata.name}: valid`);
  } catch (e) {
    bad++;
    console.log(`  ${kind}/${o.metadata.name}: ${e.message}`);
  }
}
if (checked === 0) {
  console.log(`  no ${kind} in the file`);
  bad++;
}
process.exit(bad ? 1 : 0);
