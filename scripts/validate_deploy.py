"""Offline validation of the deployment files (run by scripts/validate-deploy.sh).

- every manifest under k8s/ against the Kubernetes OpenAPI schemas (kubernetes-validate,
  strict: unknown fields are errors), for the Kubernetes version given;
- the platform's own rules on top: probes on /readyz and /healthz, resource requests and
  limits, non-root pods, a PodDisruptionBudget per Deployment, HPAs for the gateway and the
  writers, migrations as a Job, and no literal secret anywhere;
- docker-compose.yml against the Compose specification's JSON schema (as vendored by PyPI's
  check-jsonschema, pinned in scripts/services.sh).

Exit code 0 when everything passes; every problem is printed with its file and resource.
"""

import json
import re
import subprocess
import sys
import pathlib

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRETISH = re.compile(r"(SECRET|PASSWORD|TOKEN|PRIVATE|API_KEY(?!_HASHES)|ACCESS_KEY)", re.I)
problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def containers(pod_spec):
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def check_env(where, c):
    for e in c.get("env", []) or []:
        if "value" in e and SECRETISH.search(e["name"]):
            problem(where, f"env {e['name']} has a literal value: secrets come from secretKeyRef")


def check_pod(where, pod_spec, long_running):
    sc = pod_spec.get("securityContext", {})
    if not sc.get("runAsNonRoot"):
        problem(where, "pod securityContext.runAsNonRoot must be true")
    for c in containers(pod_spec):
        cw = f"{where} container {c.get('name')}"
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    problem(cw, f"resources.{kind}.{r} missing")
        if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            problem(cw, "securityContext.allowPrivilegeEscalation must be false")
        check_env(cw, c)
        if long_running:
            rp = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
            lp = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
            if rp != "/readyz":
                problem(cw, f"readinessProbe must GET /readyz (has {rp!r})")
            if lp != "/healthz":
                problem(cw, f"livenessProbe must GET /healthz (has {lp!r})")


def check_k8s(version):
    files = sorted((ROOT / "k8s").glob("*.yaml"))
    if not files:
        problem("k8s/", "no manifests")
        return
    r = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet", "-k", version]
        + [str(f) for f in files],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        problem("kubernetes-validate", (r.stdout + r.stderr).strip())
    docs = []
    for f in files:
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs.append((f.name, d))
    deployments, pdb_selectors, hpa_targets, jobs = {}, [], set(), []
    for fname, d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        where = f"{fname} {kind}/{name}"
        if kind == "Secret" and (d.get("data") or d.get("stringData")):
            problem(where, "literal Secret: reference secrets created outside the repo instead")
        if kind == "ConfigMap":
            for k in (d.get("data") or {}):
                if SECRETISH.search(k):
                    problem(where, f"key {k} looks like a secret: use a Secret reference")
        if kind in ("Deployment", "StatefulSet"):
            deployments[name] = d["spec"]["template"]["metadata"].get("labels", {})
            check_pod(where, d["spec"]["template"]["spec"], long_running=True)
        if kind == "Job":
            jobs.append(name)
            check_pod(where, d["spec"]["template"]["spec"], long_running=False)
        if kind == "CronJob":
            check_pod(where, d["spec"]["jobTemplate"]["spec"]["template"]["spec"], long_running=False)
        if kind == "PodDisruptionBudget":
            pdb_selectors.append(d["spec"]["selector"].get("matchLabels", {}))
        if kind == "HorizontalPodAutoscaler":
            hpa_targets.add(d["spec"]["scaleTargetRef"]["name"])
    for name, labels in deployments.items():
        if not any(sel and all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            problem(f"Deployment/{name}", "no PodDisruptionBudget selects its pods")
    for name in ("gateway", "lake-writer", "timeline"):
        if name in deployments and name not in hpa_targets:
            problem(f"Deployment/{name}", "needs a HorizontalPodAutoscaler")
    for name in ("gateway", "lake-writer"):
        if name not in deployments:
            problem("k8s/", f"no Deployment {name}")
    # One definition of the contract's limits for every service that checks events.
    for fname, d in docs:
        if d.get("kind") == "Deployment" and d["metadata"].get("name") in ("gateway", "lake-writer"):
            prefix = {"gateway": "GATEWAY_", "lake-writer": "LAKE_WRITER_"}[d["metadata"]["name"]]
            refs = [e for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("envFrom", [])]
            if not any(r.get("configMapRef", {}).get("name") == "eventplat-contract" and r.get("prefix") == prefix for r in refs):
                problem(f"{fname} Deployment/{d['metadata']['name']}", f"must read the contract's limits: envFrom configMapRef eventplat-contract with prefix {prefix}")
    if not any("migrat" in j for j in jobs):
        problem("k8s/", "the database migrations must run as a Job")
    print(f"k8s: {len(files)} files, {len(docs)} resources checked against Kubernetes {version}")


def check_compose():
    import check_jsonschema
    schema_path = pathlib.Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(schema_path.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    for e in errors:
        problem("docker-compose.yml", f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
    for name, svc in (compose.get("services") or {}).items():
        for k, v in (svc.get("environment") or {}).items() if isinstance(svc.get("environment"), dict) else []:
            if SECRETISH.search(k) and v not in (None, "") and not str(v).startswith("${"):
                if name in ("moto", "postgres") or str(v) in ("test", "postgres"):
                    continue  # local stand-ins' throwaway credentials
                problem(f"docker-compose.yml {name}", f"{k} has a literal value: take it from the environment")
    print(f"compose: {len(compose.get('services', {}))} services checked against the Compose specification")


def check_nats_values():
    """The bus's Helm values (k8s/helm/nats-values.yaml): a 3-server JetStream cluster across
    zones, with route compression, on a NATS that honours stream compression (2.10+)."""
    path = ROOT / "k8s/helm/nats-values.yaml"
    where = "k8s/helm/nats-values.yaml"
    try:
        v = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        problem(where, f"unreadable: {e}")
        return
    cfg = v.get("config", {})
    cluster = cfg.get("cluster", {})
    if not cluster.get("enabled") or cluster.get("replicas") != 3:
        problem(where, "config.cluster must be enabled with 3 replicas (stream replicas = 3)")
    if (cluster.get("merge", {}).get("compression", {}) or {}).get("mode") != "s2_auto":
        problem(where, "config.cluster.merge.compression.mode must be s2_auto (route compression)")
    if not cfg.get("jetstream", {}).get("enabled"):
        problem(where, "config.jetstream.enabled must be true")
    tag = str(v.get("container", {}).get("image", {}).get("tag", ""))
    m = re.match(r"(\d+)\.(\d+)", tag)
    if not m or (int(m.group(1)), int(m.group(2))) < (2, 10):
        problem(where, f"container.image.tag {tag!r}: stream and route compression need NATS 2.10 or newer")
    if "topology.kubernetes.io/zone" not in (v.get("podTemplate", {}).get("topologySpreadConstraints") or {}):
        problem(where, "the servers must spread across zones (podTemplate.topologySpreadConstraints)")
    print("nats helm values: checked")


def self_test():
    """The rules catch what they are for (a validator that passes everything is no check)."""
    bad_pod = {"containers": [{"name": "x", "env": [{"name": "STATS_JWT_SECRET", "value": "s3cret"}],
                               "readinessProbe": {"httpGet": {"path": "/"}}}]}
    check_pod("self-test", bad_pod, long_running=True)
    found = list(problems)
    problems.clear()
    expected = ["runAsNonRoot", "resources.requests.cpu", "resources.limits.memory",
                "literal value", "/readyz", "/healthz", "allowPrivilegeEscalation"]
    missing = [e for e in expected if not any(e in p for p in found)]
    if missing:
        print(f"FAIL self-test: the rules did not catch {missing}")
        sys.exit(1)


# A value for each secret a service reads from a Secret, shaped as the real one (the env
# check below needs the service to accept it, not to use it).
SECRET_PLACEHOLDERS = [
    (re.compile(r"_HASHES$"), "a" * 64),
    (re.compile(r"REDIS_URL$"), "redis://redis:6379"),
    (re.compile(r"DATABASE_URL$"), "postgres://eventplat@postgres:5432/eventplat"),
    (re.compile(r"SECRET$"), "0123456789abcdef0123456789abcdef"),
]


def service_envs(service):
    """The environment each k8s container and compose service of `service` runs with
    (ConfigMaps through envFrom with their prefixes, literal values, secrets as placeholders):
    what `scripts/validate_deploy.py --env SERVICE` prints as JSON for the services' tests."""
    out = []
    files = sorted((ROOT / "k8s").glob("*.yaml"))
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        kind = d.get("kind")
        spec = {"Deployment": lambda: d["spec"]["template"]["spec"], "Job": lambda: d["spec"]["template"]["spec"],
                "CronJob": lambda: d["spec"]["jobTemplate"]["spec"]["template"]["spec"]}.get(kind)
        if spec is None:
            continue
        for c in containers(spec()):
            if not c.get("image", "").startswith(f"ghcr.io/eventplat/{service}:") or c.get("args") or c.get("command"):
                continue
            env = {}
            for ref in c.get("envFrom", []) or []:
                data = maps.get(ref.get("configMapRef", {}).get("name"), {})
                env.update({ref.get("prefix", "") + k: str(v) for k, v in data.items()})
            for e in c.get("env", []) or []:
                if "value" in e:
                    env[e["name"]] = str(e["value"])
                elif "secretKeyRef" in (e.get("valueFrom") or {}):
                    env[e["name"]] = next((v for pat, v in SECRET_PLACEHOLDERS if pat.search(e["name"])), "placeholder")
            out.append({"where": f"k8s {kind}/{d['metadata']['name']} container {c['name']}", "env": env})
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, svc in (compose.get("services") or {}).items():
        if (svc.get("build") or {}).get("target") != service:
            continue
        env = {}
        for k, v in (svc.get("environment") or {}).items():
            m = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", str(v))
            env[k] = m.group(1) if m else str(v)
        out.append({"where": f"docker-compose.yml service {name}", "env": env})
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--env":
        print(json.dumps(service_envs(sys.argv[2])))
        sys.exit(0)
    self_test()
    check_k8s(sys.argv[1])
    check_compose()
    check_nats_values()
    if problems:
        print("\n".join(f"FAIL {p}" for p in problems))
        sys.exit(1)
    print("deployment files: all checks passed")
