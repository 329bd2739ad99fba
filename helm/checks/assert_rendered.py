#!/usr/bin/env python3
"""Assertions on the chart's rendered manifests, run by scripts/helm-check.

kubernetes-validate proves that each object is well-formed; this proves that the objects fit
together and say what the sidecar needs:

  python3 assert_rendered.py manifests RENDERED.yaml PROFILE PROJECT_README
      PROFILE is default, full, embed or admin-off (which values file produced RENDERED.yaml).
  python3 assert_rendered.py schema-sync values.yaml values.schema.json
      every key of values.yaml is declared in the schema, and the schema declares nothing else.
  python3 assert_rendered.py values-refs CHART_DIR
      every `.Values.a.b` that a template (NOTES.txt and _helpers.tpl included) names exists in
      values.yaml: Helm renders a misspelt path as an empty string, and neither `helm lint
      --strict` nor `helm template` says so.

Prints one line per failed assertion and a count; exits 1 when any failed.
"""

import base64
import json
import re
import sys

import yaml

SECRETS_DIR = "/etc/session-sidecar/secrets"
ADMIN_FILE = SECRETS_DIR + "/admin/token"
APP_ADMIN_ENV = "SESSION_SIDECAR_ADMIN_TOKEN_FILE"
# What each profile's values make of the session API's credential (adminToken): the Secret, its
# key, whether the chart generates it, the app container that mounts it and where. None: off.
ADMIN = {
    "default": {"secret": "t-session-sidecar-admin", "key": "admin-token", "generated": True,
                "app": "app", "dir": "/var/run/session-sidecar/admin"},
    "full": {"secret": "session-sidecar-admin", "key": "token", "generated": False,
             "app": "shop", "dir": "/run/secrets/session-sidecar"},
    "embed": {"secret": "t-session-sidecar-admin", "key": "admin-token", "generated": True,
              "app": "shop", "dir": "/var/run/session-sidecar/admin"},
    "admin-off": None,
}
failures = []
passed = 0


def check(condition, message):
    """Records one assertion."""
    global passed
    if condition:
        passed += 1
    else:
        failures.append(message)
    return condition


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pod_specs(objs):
    """(owner, pod template metadata, pod spec) of every workload and bare pod."""
    out = []
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            t = o["spec"]["template"]
            out.append((f'{o["kind"]}/{o["metadata"]["name"]}', t.get("metadata", {}), t["spec"]))
        elif o["kind"] == "Pod":
            out.append((f'Pod/{o["metadata"]["name"]}', o["metadata"], o["spec"]))
    return out


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


def sidecars(objs):
    """(owner, spec, container, is_init) for every session-sidecar container (args: [serve])."""
    out = []
    for owner, _meta, spec in pod_specs(objs):
        for is_init, key in ((True, "initContainers"), (False, "containers")):
            for c in spec.get(key, []) or []:
                if c.get("args") == ["serve"] and "SIDECAR_LISTEN" in env_of(c):
                    out.append((owner, spec, c, is_init))
    return out


def documented_env(readme_path):
    """SIDECAR_* names of every flag in the project README's Configuration table."""
    with open(readme_path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Configuration\n(.*?)^## ", text, re.S | re.M)
    if not m:
        return None
    flags = re.findall(r"^\| `(--[a-z0-9-]+)[^|]*\|", m.group(1), re.M)
    # Rows like "`--redis-username`, `--redis-password-file`" hold two flags.
    flags += re.findall(r"^\| `--[a-z0-9-]+`, `(--[a-z0-9-]+)`", m.group(1), re.M)
    return {"SIDECAR_" + f[2:].upper().replace("-", "_") for f in flags}


def check_sidecar(owner, spec, c, is_init, documented):
    name = f'{owner} container {c["name"]}'
    env = env_of(c)
    check(c.get("args") == ["serve"], f"{name}: args are not [serve]")
    # Placement: a native sidecar is an init container with restartPolicy Always, and only then.
    check(is_init == (c.get("restartPolicy") == "Always"),
          f"{name}: restartPolicy Always belongs to a native sidecar in initContainers, and only there")
    # Configuration: only variables that the binary reads (README "Configuration").
    if documented is not None:
        unknown = sorted(k for k in env if k.startswith("SIDECAR_") and k not in documented)
        check(not unknown, f"{name}: SIDECAR_* variables that no flag reads: {unknown}")
    for k in ("SIDECAR_LISTEN", "SIDECAR_METRICS_LISTEN", "SIDECAR_LOG_FORMAT"):
        check(k in env, f"{name}: {k} missing")
    # Secrets: files in the read-only projected volume, never values.
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
    mount = next((m for m in mounts.values() if m["mountPath"] == SECRETS_DIR), None)
    files = []
    for k, v in env.items():
        if k.endswith("_FILE") and v:
            files += [p.split("=", 1)[-1] for p in v.split(",")]
    if files:
        if check(mount is not None, f"{name}: secret files {files} but nothing mounted at {SECRETS_DIR}"):
            check(mount.get("readOnly") is True, f"{name}: the secrets mount is not read-only")
            vol = volumes.get(mount["name"], {})
            check("projected" in vol, f'{name}: volume {mount["name"]} is missing or not projected')
            items = {
                i["path"]
                for s in vol.get("projected", {}).get("sources", [])
                for i in s.get("secret", {}).get("items", [])
            }
            for f in files:
                check(f.startswith(SECRETS_DIR + "/") and f[len(SECRETS_DIR) + 1:] in items,
                      f"{name}: {f} is not a file of the secrets volume ({sorted(items)})")
    for k, v in env.items():
        check(not (k.endswith(("SECRET", "PASSWORD", "TOKEN")) and v), f"{name}: {k} carries a secret in the environment")
    # Ports and probes: the admin port, named; /healthz for liveness, /readyz for readiness.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    metrics_port = int(env.get("SIDECAR_METRICS_LISTEN", ":0").rsplit(":", 1)[1])
    check(ports.get("sidecar-metrics") == metrics_port, f"{name}: port sidecar-metrics is not {metrics_port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "sidecar-metrics",
              f"{name}: {probe} is not GET {path} on sidecar-metrics")
    # Least privilege.
    sc, psc = c.get("securityContext", {}), spec.get("securityContext", {}) or {}
    check(sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{name}: runAsNonRoot is not true")
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem is not true")
    check(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation is not false")
    check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}: capabilities ALL are not dropped")
    seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})) or {}
    check(seccomp.get("type") == "RuntimeDefault", f"{name}: seccomp profile is not RuntimeDefault")
    check("memory" in c.get("resources", {}).get("limits", {}), f"{name}: no memory limit")
    check("cpu" in c.get("resources", {}).get("requests", {}), f"{name}: no CPU request")
    # SIGTERM: the sidecar drains for up to 8 s.
    check(int(spec.get("terminationGracePeriodSeconds", 30)) >= 15, f"{owner}: terminationGracePeriodSeconds < 15")


def check_wiring(objs):
    """Services select rendered pods and name their ports; monitors and budgets select them."""
    pods = pod_specs(objs)
    workloads = [(o, m, s) for o, m, s in pods if not o.startswith("Pod/")]
    services = [o for o in objs if o["kind"] == "Service"]
    for svc in services:
        name = f'Service/{svc["metadata"]["name"]}'
        sel = svc["spec"].get("selector", {})
        matched = [(o, s) for o, m, s in workloads if subset(sel, m.get("labels", {}))]
        if check(matched, f"{name}: selects no rendered pod ({sel})"):
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort")
                if isinstance(target, str):
                    for o, s in matched:
                        names = {p.get("name") for c in (s.get("containers", []) + (s.get("initContainers") or []))
                                 for p in c.get("ports", [])}
                        check(target in names, f"{name}: targetPort {target} is no port of {o}")
    for sm in (o for o in objs if o["kind"] == "ServiceMonitor"):
        name = f'ServiceMonitor/{sm["metadata"]["name"]}'
        sel = sm["spec"]["selector"].get("matchLabels", {})
        hits = [s for s in services if subset(sel, s["metadata"].get("labels", {}))]
        check(len(hits) == 1, f"{name}: selects {len(hits)} Services, not exactly the metrics one")
        for ep in sm["spec"]["endpoints"]:
            check(ep.get("path") == "/metrics", f"{name}: endpoint path is not /metrics")
            check(all(ep["port"] in {p["name"] for p in s["spec"]["ports"]} for s in hits),
                  f'{name}: port {ep["port"]} is not a port of the selected Service')
    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        check(any(subset(sel, m.get("labels", {})) for _o, m, _s in workloads),
              f'PodDisruptionBudget/{pdb["metadata"]["name"]}: selects no rendered pod')
        check(("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]),
              f'PodDisruptionBudget/{pdb["metadata"]["name"]}: needs exactly one of minAvailable, maxUnavailable')
    for o, meta, spec in pods:
        if o.startswith("Pod/"):
            check(meta.get("annotations", {}).get("helm.sh/hook") == "test", f"{o}: a bare pod that is not a helm test hook")


def secret_values(obj):
    """Decoded data of a rendered Secret (bytes)."""
    out = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return out


def check_generated_secrets(objs):
    """The HMAC secrets the chart generates are ones the sidecar accepts: at least 32 bytes."""
    for o in objs:
        if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-jwt"):
            for k, v in secret_values(o).items():
                check(len(v.rstrip(b"\r\n")) >= 32,
                      f'Secret/{o["metadata"]["name"]}: {k} is {len(v)} bytes, the sidecar needs at least 32')


def check_admin(objs, want):
    """The session API's credential: a Secret, mounted read-only into the sidecar (with
    SIDECAR_ADMIN_TOKEN_FILE) and into the app container alone (with SESSION_SIDECAR_ADMIN_TOKEN_FILE);
    with adminToken.enabled=false, none of it."""
    admin_secrets = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-admin")]
    for owner, spec, c, _is_init in sidecars(objs):
        env = env_of(c)
        volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
        projected = [
            (s["secret"]["name"], i["key"])
            for v in volumes.values()
            for s in v.get("projected", {}).get("sources", [])
            if "secret" in s
            for i in s["secret"].get("items", [])
            if i["path"] == "admin/token"
        ]
        containers = (spec.get("initContainers") or []) + spec.get("containers", [])
        # Every container that mounts a volume made of the credential's Secret, and where.
        mounting = {}
        for ct in containers:
            for m in ct.get("volumeMounts", []):
                v = volumes.get(m["name"], {})
                if want and v.get("secret", {}).get("secretName") == want["secret"]:
                    mounting[ct["name"]] = (m, v)
        app = next((ct for ct in spec.get("containers", []) if ct["name"] == (want or {}).get("app")), None)
        if want is None:
            check("SIDECAR_ADMIN_TOKEN_FILE" not in env, f"{owner}: adminToken.enabled=false still sets SIDECAR_ADMIN_TOKEN_FILE")
            check(not projected, f"{owner}: adminToken.enabled=false still projects admin/token into the sidecar")
            check(not any(APP_ADMIN_ENV in env_of(ct) for ct in containers),
                  f"{owner}: adminToken.enabled=false still gives a container {APP_ADMIN_ENV}")
            check(not any(m["name"].endswith("-admin-token") for ct in containers for m in ct.get("volumeMounts", [])),
                  f"{owner}: adminToken.enabled=false still mounts an admin-token volume")
            check(not any(n.endswith("-admin-token") for n in volumes), f"{owner}: adminToken.enabled=false still has an admin-token volume")
            continue
        name = f'{owner} container {c["name"]}'
        check(env.get("SIDECAR_ADMIN_TOKEN_FILE") == ADMIN_FILE, f"{name}: SIDECAR_ADMIN_TOKEN_FILE is {env.get('SIDECAR_ADMIN_TOKEN_FILE')!r}, not {ADMIN_FILE}")
        check(projected == [(want["secret"], want["key"])],
              f"{name}: admin/token of the secrets volume comes from {projected}, not [({want['secret']!r}, {want['key']!r})]")
        # check_sidecar proves that the secrets volume is mounted read-only at SECRETS_DIR.
        if check(app is not None, f'{owner}: no app container {want["app"]}'):
            app_env = env_of(app)
            path = want["dir"] + "/admin-token"
            check(app_env.get(APP_ADMIN_ENV) == path, f'{owner} container {app["name"]}: {APP_ADMIN_ENV} is {app_env.get(APP_ADMIN_ENV)!r}, not {path!r}')
            check(app_env.get("SESSION_SIDECAR_URL", "").startswith("http://127.0.0.1:"),
                  f'{owner} container {app["name"]}: SESSION_SIDECAR_URL is not the sidecar on loopback')
            m, v = mounting.get(app["name"], (None, None))
            if check(m is not None, f'{owner} container {app["name"]}: the credential is not mounted'):
                check(m["mountPath"] == want["dir"] and m.get("readOnly") is True and "subPath" not in m,
                      f'{owner} container {app["name"]}: the credential mount is {m}, not read-only at {want["dir"]}')
                check(v["secret"].get("items") == [{"key": want["key"], "path": "admin-token"}],
                      f'{owner}: the app\'s credential volume holds {v["secret"].get("items")}, not {want["key"]} as admin-token')
                check(v["secret"].get("defaultMode") == 0o444, f"{owner}: the app's credential volume is not mode 0444")
        # Nothing but the app gets the credential's own volume (the sidecar reads its projected copy).
        check(set(mounting) <= {want["app"]}, f"{owner}: containers other than {want['app']} mount the credential: {sorted(mounting)}")
    if want is None:
        check(not admin_secrets, f"adminToken.enabled=false still renders {[o['metadata']['name'] for o in admin_secrets]}")
        return
    generated = [o for o in admin_secrets if o["metadata"]["name"] == want["secret"]]
    if want["generated"]:
        if check(len(generated) == 1, f'no generated Secret {want["secret"]}'):
            data = secret_values(generated[0])
            value = data.get(want["key"])
            if check(value is not None, f'Secret {want["secret"]} has no key {want["key"]} ({sorted(data)})'):
                check(value != b"" and not re.search(rb"\s", value),
                      f'Secret {want["secret"]}: the credential is empty or holds whitespace, which the sidecar refuses')
                check(re.fullmatch(rb"[A-Za-z0-9]{48}", value) is not None,
                      f'Secret {want["secret"]}: the credential is not 48 random alphanumeric characters')
    else:
        check(not admin_secrets, f"adminToken.create=false still renders {[o['metadata']['name'] for o in admin_secrets]}")


def profile_checks(objs, profile):
    found = sidecars(objs)
    check(len(found) == 1, f"expected one sidecar container, found {len(found)}")
    if not found:
        return
    owner, spec, c, is_init = found[0]
    env = env_of(c)
    kinds = sorted({o["kind"] for o in objs})
    if profile == "default":
        check(is_init, "default: the sidecar is not a native sidecar (initContainers)")
        check(env.get("SIDECAR_LISTEN") == "127.0.0.1:8080", "default: SIDECAR_LISTEN is not 127.0.0.1:8080")
        check(env.get("SIDECAR_METRICS_LISTEN") == "0.0.0.0:9090", "default: SIDECAR_METRICS_LISTEN is not 0.0.0.0:9090")
        check(env.get("SIDECAR_LOG_FORMAT") == "json", "default: logs are not JSON")
        check("SIDECAR_REDIS_NODES" not in env, "default: Redis nodes set")
        check(any(o["kind"] == "Secret" and o["metadata"]["name"].endswith("-jwt") for o in objs),
              "default: no generated JWT Secret")
        check(env.get("SIDECAR_JWT_SECRET_FILE") == SECRETS_DIR + "/jwt/secret", "default: no JWT secret file")
        check(any(o["kind"] == "ConfigMap" for o in objs), "default: no nginx ConfigMap")
        check("ServiceMonitor" not in kinds, "default: a ServiceMonitor without serviceMonitor.enabled")
        check("PrometheusRule" not in kinds, "default: a PrometheusRule without prometheusRule.enabled")
        check(not any(o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"].get("labels", {}) for o in objs),
              "default: a dashboard ConfigMap without grafanaDashboard.enabled")
        for k in ("SIDECAR_JWKS_URL", "SIDECAR_OIDC_ISSUER", "SIDECAR_CLAIM_HEADER"):
            check(k not in env, f"default: {k} set without identity providers or claim headers")
    elif profile == "full":
        check(not is_init and "restartPolicy" not in c, "full: sidecar.native=false still renders a native sidecar")
        check(c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds") == 5, "full: no preStop sleep of 5 s")
        want = {
            "SIDECAR_LISTEN": "0.0.0.0:8081",
            "SIDECAR_METRICS_LISTEN": "0.0.0.0:9464",
            "SIDECAR_REDIS_NODES": ",".join(f"rediss://redis-cluster-{i}.redis-cluster-headless:6379" for i in range(3)),
            "SIDECAR_REDIS_USERNAME": "session-sidecar",
            "SIDECAR_REDIS_PASSWORD_FILE": SECRETS_DIR + "/redis/password",
            "SIDECAR_REDIS_READ_FROM_REPLICAS": "true",
            "SIDECAR_REDIS_CA_FILE": SECRETS_DIR + "/redis/ca.crt",
            "SIDECAR_REDIS_KEY_PREFIX": "shop",
            "SIDECAR_JWT_SECRET_FILE": SECRETS_DIR + "/jwt/secret",
            "SIDECAR_JWT_PUBLIC_KEY_FILE": f"2026-01={SECRETS_DIR}/jwt/public-0.pem,{SECRETS_DIR}/jwt/public-1.pem",
            "SIDECAR_ALGORITHMS": "HS256,RS256,ES256",
            "SIDECAR_ISSUER": "https://id.example.com/",
            "SIDECAR_AUDIENCE": "shop,shop-admin",
            "SIDECAR_LEEWAY": "10",
            "SIDECAR_CACHE_TTL": "30",
            "SIDECAR_CACHE_MAX_ENTRIES": "500000",
            "SIDECAR_CACHE_MAX_BYTES": "268435456",
            "SIDECAR_JWKS_URL": "https://id.example.com/protocol/openid-connect/certs,"
                                "https://partner.example.org/=https://partner.example.org/.well-known/jwks.json",
            "SIDECAR_OIDC_ISSUER": "https://accounts.example.net",
            "SIDECAR_CLAIM_HEADER": "realm_access.roles=X-Auth-Roles,email=X-Auth-Email",
            "SIDECAR_TOKEN_COOKIE": "__Host-session",
            "SIDECAR_ADMIN_TOKEN_FILE": SECRETS_DIR + "/admin/token",
            "SIDECAR_SESSION_KEYS": "true",
            "SIDECAR_SESSION_TTL": "7200",
            "SIDECAR_LOG_FORMAT": "text",
            "SIDECAR_MAX_BODY_BYTES": "131072",
        }
        for k, v in want.items():
            check(env.get(k) == v, f"full: {k}={env.get(k)!r}, expected {v!r}")
        check({"sidecar-api", "sidecar-metrics"} <= {p["name"] for p in c.get("ports", [])},
              "full: an exposed API must be a declared port")
        check("ServiceMonitor" in kinds and "PodDisruptionBudget" in kinds, "full: no ServiceMonitor or PodDisruptionBudget")
        check(not any(o["kind"] == "Secret" for o in objs), "full: a Secret generated despite existing ones")
        rule = next((o for o in objs if o["kind"] == "PrometheusRule"), None)
        check(rule is not None and rule["metadata"]["namespace"] == "monitoring"
              and rule["metadata"]["labels"].get("release") == "kube-prometheus-stack",
              "full: no PrometheusRule in prometheusRule.namespace with prometheusRule.labels")
        if rule:
            alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
            check(len(alerts) >= 7 and all(r["labels"].get("team") == "identity" and r["labels"].get("severity")
                                           and r["annotations"].get("summary") and r["annotations"].get("description")
                                           for r in alerts),
                  "full: every alert needs severity, prometheusRule.alertLabels, a summary and a description")
        dash = next((o for o in objs if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"), None)
        check(dash is not None and dash["metadata"]["namespace"] == "monitoring"
              and dash["metadata"].get("annotations", {}).get("grafana_folder") == "Identity",
              "full: no dashboard ConfigMap (grafana_dashboard: \"1\") in grafanaDashboard.namespace with its annotations")
        if dash:
            board = json.loads(dash["data"]["session-sidecar.json"])
            check(board.get("uid") == "session-sidecar" and len(board.get("panels", [])) > 10,
                  "full: the dashboard ConfigMap does not hold the dashboard JSON")
        sm = next((o for o in objs if o["kind"] == "ServiceMonitor"), None)
        if sm:
            check(sm["metadata"]["namespace"] == "monitoring", "full: ServiceMonitor not in serviceMonitor.namespace")
    elif profile == "embed":
        check(owner.startswith("Deployment/") and "shop" in owner, f"embed: the sidecar is in {owner}, not the shop's pods")
        check(is_init, "embed: the sidecar is not a native sidecar")
        check(not any(o["kind"] == "Deployment" and "session-sidecar" in o["metadata"]["name"] for o in objs),
              "embed: the demo Deployment is rendered although app.enabled=false")
        check(env.get("SIDECAR_REDIS_NODES", "").startswith("redis://"), "embed: the parent's redis.nodes did not reach the sidecar")
    elif profile == "admin-off":
        check(env.get("SIDECAR_LISTEN", "").startswith("127.0.0.1:"), "admin-off: without a credential the API must stay on loopback")
        check(any(o["kind"] == "Secret" and o["metadata"]["name"].endswith("-jwt") for o in objs),
              "admin-off: the JWT Secret went away with the admin credential")


def manifests(path, profile, readme):
    objs = load(path)
    documented = documented_env(readme)
    check(documented, f"{readme}: no flags found in its Configuration section")
    for owner, spec, c, is_init in sidecars(objs):
        check_sidecar(owner, spec, c, is_init, documented)
    check_wiring(objs)
    check_generated_secrets(objs)
    check(profile in ADMIN, f"unknown profile {profile}")
    check_admin(objs, ADMIN.get(profile))
    profile_checks(objs, profile)


def keys(tree, prefix=""):
    """Dotted paths of a values tree, down to leaves and to maps the schema leaves open."""
    out = set()
    for k, v in tree.items():
        p = prefix + k
        out.add(p)
        if isinstance(v, dict):
            out |= keys(v, p + ".")
    return out


def schema_keys(schema, prefix=""):
    out = set()
    for k, v in schema.get("properties", {}).items():
        p = prefix + k
        out.add(p)
        if v.get("type") == "object" and v.get("additionalProperties") is False:
            out |= schema_keys(v, p + ".")
    return out


def schema_sync(values_path, schema_path):
    import json

    with open(values_path, encoding="utf-8") as f:
        values = yaml.safe_load(f)
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    v, s = keys(values), schema_keys(schema) - {"global"}
    # Open maps (securityContext, resources, ...) have children in values.yaml only.
    undeclared = sorted(k for k in v - s if not any(k.startswith(o + ".") for o in s))
    check(not undeclared, f"values.yaml keys the schema does not declare: {undeclared}")
    check(not (s - v), f"schema keys values.yaml does not have: {sorted(s - v)}")
    check(schema.get("additionalProperties") is False, "the schema's root is not closed")
    check(schema.get("$schema", "").startswith("http://json-schema.org/draft-07/"), "the schema is not draft-07")


def values_refs(chart):
    import glob
    import json
    import os

    with open(os.path.join(chart, "values.yaml"), encoding="utf-8") as f:
        values = yaml.safe_load(f)
    with open(os.path.join(chart, "values.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    files = sorted(glob.glob(os.path.join(chart, "templates", "**", "*"), recursive=True))
    seen = 0
    for path in (p for p in files if os.path.isfile(p)):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r"(?<![\w$])\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text):
            seen += 1
            node, sch, walked = values, schema, []
            for part in m.group(1).split(".")[1:]:
                walked.append(part)
                if isinstance(node, dict) and part in node:
                    node = node[part]
                    sch = (sch or {}).get("properties", {}).get(part, {})
                    continue
                # A key that values.yaml does not have: fine only inside a map the schema leaves open.
                open_map = isinstance(node, dict) and (sch or {}).get("additionalProperties") is not False
                check(open_map, f'{os.path.relpath(path, chart)}: .Values.{".".join(walked)} is not in values.yaml')
                break
            else:
                check(True, "")
    check(seen > 0, f"{chart}: no .Values reference found in its templates")


def main(argv):
    if len(argv) == 5 and argv[1] == "manifests":
        manifests(argv[2], argv[3], argv[4])
    elif len(argv) == 4 and argv[1] == "schema-sync":
        schema_sync(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "values-refs":
        values_refs(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for f in failures:
        print(f"  assertion failed: {f}")
    print(f"  {passed} assertions held, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
