"""Checks a generated governor's deploy assets (run through scripts/check-deploy).

For each crate folder given (generated/<id>):

1. every manifest in deploy/*.yaml (and the Secret template,
   deploy/secret.yaml.example) validates against the Kubernetes API
   schemas (the `kubernetes-validate` package, strict: unknown fields fail);
2. the cross-checks no schema can make: selectors match the pod labels,
   ports agree with the spec's `deploy.port`, every Secret key a container
   reads exists in deploy/secret.yaml.example (optional ones at least documented
   there), the pod runs as the Containerfile's numeric non-root user, the
   autoscaler targets the Deployment, the grace period outlasts the drain,
   `--retain`/`--archive` follow deploy.retain/deploy.archive (a bucket:
   no archive volume, HTTPS egress; else a mounted claim);
3. with --bin DIR: the governor binary from DIR starts locally with the
   container's own args and environment (Secret values filled with test
   values, volumes mapped to temp folders, the OIDC key set read from a
   local file instead of Google's URL), answers its probe paths with 200,
   and stops cleanly on SIGTERM. A PostgreSQL-ledger governor needs
   GGEN_TEST_DATABASE_URL.

Prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv_utils
from kubernetes_validate import validate as kv_validate

# The oldest Kubernetes the manifests target, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kv_utils.latest_version())
REPO = Path(__file__).resolve().parent.parent
JWKS_FIXTURE = REPO / "runtime/tests/it/ingress/fixtures/jwks.json"
WORKLOADS = ("Deployment", "StatefulSet")
# What the drain takes at most: --shutdown-timeout plus the final checkpoint.
CHECKPOINT_MARGIN_S = 10


class Findings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}")

    def report(self, tool: str, crates: list[Path]) -> int:
        """Prints the findings, then a summary on stderr; the exit code."""
        for line in self.lines:
            print(line)
        checked = ", ".join(str(c) for c in crates)
        if self.lines:
            print(f"{tool}: {len(self.lines)} finding(s) in {checked}", file=sys.stderr)
            return 1
        print(f"{tool}: {checked}: ok", file=sys.stderr)
        return 0


def load_documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def validate_schemas(path: Path, docs: list[dict], found: Findings) -> None:
    for doc, version in ((d, v) for d in docs for v in KUBERNETES_VERSIONS):
        what = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kv_validate(doc, version, strict=True)
        except kv_utils.ValidationError as error:
            at = "/".join(str(p) for p in error.path)
            found.add(what, f"invalid against Kubernetes {version}: {error.message} at /{at}")
        except (kv_utils.SchemaNotFoundError, kv_utils.InvalidSchemaError, kv_utils.VersionNotSupportedError) as error:
            found.add(what, f"cannot be validated against Kubernetes {version}: {error.message}")


def matches(selector: dict | None, labels: dict) -> bool:
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def spec_of(crate: Path) -> dict:
    manifest = json.loads((crate / "ggen-manifest.json").read_text(encoding="utf-8"))
    # The project root is the crate's grandparent (generated/<id>), else this repository.
    for root in (crate.resolve().parent.parent, REPO):
        spec_path = root / manifest["spec"]["path"]
        if spec_path.is_file():
            return json.loads(spec_path.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"{crate}: spec {manifest['spec']['path']} not found")


def container_user(containerfile: Path) -> int | None:
    users = re.findall(r"^USER\s+(\S+)", containerfile.read_text(encoding="utf-8"), re.M)
    if not users:
        return None
    uid = users[-1].split(":")[0]
    return int(uid) if uid.isdigit() else None


def documented_keys(secret_path: Path) -> set[str]:
    """Keys the Secret template names in its comments (the optional ones)."""
    text = secret_path.read_text(encoding="utf-8")
    return set(re.findall(r"^#\s+([a-z][a-z0-9-]*)\s{2,}", text, re.M))


def flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def cross_check(crate: Path, docs: list[dict], secret_docs: list[dict], found: Findings) -> dict | None:
    """The cross-checks; returns the workload, if there is exactly one."""
    spec = spec_of(crate)
    deploy = spec.get("deploy", {})
    port = deploy.get("port", 8080)
    replicas = deploy.get("replicas", 1)
    where = str(crate / "deploy/kubernetes.yaml")
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append(doc)

    workloads = [d for kind in WORKLOADS for d in by_kind.get(kind, [])]
    if len(workloads) != 1:
        found.add(where, f"expected one Deployment or StatefulSet, found {len(workloads)}")
        return None
    workload = workloads[0]
    kind = workload["kind"]
    name = workload["metadata"]["name"]
    pod = workload["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    pod_spec = pod["spec"]
    if not matches(workload["spec"]["selector"].get("matchLabels"), labels):
        found.add(where, f"{kind} selector does not match its pod labels {labels}")
    postgres = deploy.get("ledger", "postgres" if replicas > 1 else "file") == "postgres"
    if postgres and kind != "Deployment":
        found.add(where, "a PostgreSQL-ledger governor should be a Deployment")
    if not postgres and (kind != "StatefulSet" or workload["spec"].get("replicas") != 1):
        found.add(where, "a file-ledger governor should be a one-replica StatefulSet")

    for service in by_kind.get("Service", []):
        if not matches(service["spec"].get("selector"), labels):
            found.add(where, f"Service {service['metadata']['name']} selects no governor pod")
        names = {p.get("name") for c in pod_spec["containers"] for p in c.get("ports", [])}
        for p in service["spec"].get("ports", []):
            target = p.get("targetPort")
            if isinstance(target, str) and target not in names:
                found.add(where, f"Service port targets `{target}`, which no container port is named")
            if isinstance(target, int) and target != port:
                found.add(where, f"Service targetPort {target} is not deploy.port {port}")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not matches(pdb["spec"]["selector"].get("matchLabels"), labels):
            found.add(where, "PodDisruptionBudget selects no governor pod")
    policies = by_kind.get("NetworkPolicy", [])
    if not policies:
        found.add(where, "no NetworkPolicy")
    for policy in policies:
        if not matches(policy["spec"]["podSelector"].get("matchLabels"), labels):
            found.add(where, "NetworkPolicy selects no governor pod")
        ingress_ports = {p.get("port") for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
        if ingress_ports != {port}:
            found.add(where, f"NetworkPolicy admits ports {sorted(ingress_ports, key=str)}, not just deploy.port {port}")
    for constraint in pod_spec.get("topologySpreadConstraints", []):
        if not matches(constraint.get("labelSelector", {}).get("matchLabels"), labels):
            found.add(where, "a topology spread constraint selects no governor pod")
    if not pod_spec.get("topologySpreadConstraints"):
        found.add(where, "no topology spread constraint")

    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if postgres:
        if len(hpas) != 1:
            found.add(where, "a PostgreSQL-ledger governor should have one HorizontalPodAutoscaler")
        for hpa in hpas:
            target = hpa["spec"]["scaleTargetRef"]
            if (target.get("kind"), target.get("name")) != (kind, name):
                found.add(where, f"HorizontalPodAutoscaler targets {target.get('kind')}/{target.get('name')}, not {kind}/{name}")
            if hpa["spec"].get("minReplicas") != replicas:
                found.add(where, f"HorizontalPodAutoscaler minReplicas is not deploy.replicas {replicas}")
    elif hpas:
        found.add(where, "a file-ledger governor cannot be autoscaled")

    accounts = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}
    account = pod_spec.get("serviceAccountName")
    if account not in accounts:
        found.add(where, f"the pod's ServiceAccount `{account}` is not in the manifest")
    elif accounts[account].get("automountServiceAccountToken") is not False:
        found.add(where, "the ServiceAccount mounts its token")
    if pod_spec.get("automountServiceAccountToken") is not False:
        found.add(where, "the pod mounts a ServiceAccount token")

    security = pod_spec.get("securityContext", {})
    uid = security.get("runAsUser")
    image_uid = container_user(crate / "deploy/Containerfile")
    if security.get("runAsNonRoot") is not True:
        found.add(where, "the pod does not set runAsNonRoot")
    if not isinstance(uid, int) or uid == 0:
        found.add(where, "runAsNonRoot needs a numeric, non-zero runAsUser (an image's named user is refused)")
    if image_uid is None:
        found.add(str(crate / "deploy/Containerfile"), "USER is not numeric: Kubernetes cannot check runAsNonRoot")
    elif image_uid != uid:
        found.add(where, f"runAsUser {uid} differs from the Containerfile's USER {image_uid}")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        found.add(where, "seccompProfile is not RuntimeDefault")

    archive_check(deploy, postgres, workload, policies, where, found)

    secret_names = {d["metadata"]["name"]: d for d in secret_docs if d.get("kind") == "Secret"}
    optional_documented = documented_keys(crate / "deploy/secret.yaml.example")
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    for container in pod_spec["containers"]:
        cwhere = f"{where}: container {container['name']}"
        csec = container.get("securityContext", {})
        if csec.get("readOnlyRootFilesystem") is not True:
            found.add(cwhere, "root filesystem is writable")
        if csec.get("allowPrivilegeEscalation") is not False:
            found.add(cwhere, "allows privilege escalation")
        if csec.get("capabilities", {}).get("drop") != ["ALL"]:
            found.add(cwhere, "does not drop all capabilities")
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
        if list(ports.values()) != [port]:
            found.add(cwhere, f"container ports {list(ports.values())} are not deploy.port {port}")
        args = container.get("args", [])
        listen = flag(args, "--listen") or ""
        if not listen.endswith(f":{port}"):
            found.add(cwhere, f"--listen {listen!r} is not on deploy.port {port}")
        shutdown = int(flag(args, "--shutdown-timeout") or 30)
        pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if grace < pause + shutdown + CHECKPOINT_MARGIN_S:
            found.add(cwhere, f"terminationGracePeriodSeconds {grace} does not outlast the preStop pause {pause}, --shutdown-timeout {shutdown} and the checkpoint")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = container.get(probe, {}).get("httpGet")
            if not get:
                found.add(cwhere, f"no HTTP {probe}")
            elif get.get("port") not in ports and get.get("port") != port:
                found.add(cwhere, f"{probe} port {get.get('port')} is no container port")
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod_spec.get("volumes", [])}
        for mount in mounts - claims - volumes:
            found.add(cwhere, f"mounts `{mount}`, which is no volume or claim")
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if not ref:
                continue
            secret = secret_names.get(ref["name"])
            if secret is None:
                found.add(cwhere, f"{env['name']} reads Secret `{ref['name']}`, which deploy/secret.yaml.example does not define")
                continue
            keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
            if ref.get("optional"):
                if ref["key"] not in keys and ref["key"] not in optional_documented:
                    found.add(cwhere, f"{env['name']} reads optional key `{ref['key']}`, which deploy/secret.yaml.example neither defines nor documents")
            elif ref["key"] not in keys:
                found.add(cwhere, f"{env['name']} reads key `{ref['key']}`, which deploy/secret.yaml.example does not define")
        for key, value in ((k, v) for s in secret_names.values() for k, v in s.get("stringData", {}).items()):
            if value != "":
                found.add(str(crate / "deploy/secret.yaml.example"), f"key `{key}` holds a literal; the template must leave values empty")
    return workload


def archive_check(deploy: dict, postgres: bool, workload: dict, policies: list[dict], where: str, found: Findings) -> None:
    """`deploy.retain` and `deploy.archive` against the container's flags,
    the volumes and the NetworkPolicy's egress."""
    pod_spec = workload["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    args = container.get("args", [])
    retain, bucket = deploy.get("retain"), deploy.get("archive")
    if flag(args, "--retain") != retain:
        found.add(where, f"--retain {flag(args, '--retain')!r} is not deploy.retain {retain!r}")
    archive = flag(args, "--archive")
    claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    volumes = claims | {v["name"] for v in pod_spec.get("volumes", [])}
    if bucket is not None:
        if archive != bucket:
            found.add(where, f"--archive {archive!r} is not deploy.archive {bucket!r}")
        if volumes - {"ledger"}:
            found.add(where, f"a bucket archive needs no volume, but the pod has {sorted(volumes - {'ledger'})}")
        egress = {p.get("port") for policy in policies for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}
        if 443 not in egress:
            found.add(where, "NetworkPolicy egress does not admit HTTPS (443), which the archive bucket needs")
    elif retain is not None:
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if postgres:
            found.add(where, "a PostgreSQL-ledger governor with deploy.retain needs deploy.archive")
        elif mounts.get(archive) not in claims:
            found.add(where, f"--archive {archive!r} is no mounted volume claim")
    elif archive is not None:
        found.add(where, "--archive without deploy.retain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"), reverse=True):
        return str(candidate)
    raise RuntimeError("psql not found (Debian: apt-get install postgresql-client)")


def fresh_schema(url: str, name: str) -> str:
    subprocess.run(
        [psql(), url, "-q", "-v", "ON_ERROR_STOP=1", "-c", f'DROP SCHEMA IF EXISTS "{name}" CASCADE; CREATE SCHEMA "{name}"'],
        check=True,
        capture_output=True,
    )
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-c%20search_path%3D{name}"


def governor_binary(crate: Path, bin_dir: Path, what: str, found: Findings) -> tuple[Path, str] | None:
    """The crate's binary in `bin_dir` and a `where` for findings about
    `what` is done with it; None (with a finding) if it is not built."""
    cargo = (crate / "Cargo.toml").read_text(encoding="utf-8")
    binary = bin_dir / re.search(r'^name = "([^"]+)"', cargo, re.M).group(1)
    where = f"{crate}: {what} of {binary.name}"
    if not binary.exists():
        found.add(where, f"no binary at {binary} (build it first)")
        return None
    return binary, where


def start(crate: Path, workload: dict, bin_dir: Path, found: Findings) -> None:
    """Starts the governor with the container's own args and environment."""
    container = workload["spec"]["template"]["spec"]["containers"][0]
    located = governor_binary(crate, bin_dir, "local start", found)
    if located is None:
        return
    binary, where = located
    work = Path(tempfile.mkdtemp(prefix="ggen-deploy-"))
    try:
        mounts = {m["mountPath"]: work / m["name"] for m in container.get("volumeMounts", [])}
        for path in mounts.values():
            path.mkdir()
        port = free_port()
        args = []
        for arg in container.get("args", []):
            if arg.startswith("0.0.0.0:"):
                arg = f"127.0.0.1:{port}"
            args.append(str(mounts.get(arg, arg)))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        tools = work / "tools"
        tools.mkdir()
        # The image's tools stage: every program a command action names.
        for program in command_programs(crate):
            stub = tools / program
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
        env["PATH"] = f"{tools}:{env['PATH']}"
        for item in container.get("env", []):
            name = item["name"]
            if "value" in item:
                value = item["value"]
                if name == "GOVERNOR_OIDC_JWKS":
                    value = str(JWKS_FIXTURE)
                env[name] = value
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            if ref.get("optional"):
                continue  # left out of the Secret: the feature is off
            key = ref["key"]
            if key == "database-url":
                url = os.environ.get("GGEN_TEST_DATABASE_URL")
                if not url and os.environ.get("GGEN_SKIP_POSTGRES") == "1":
                    print(f"SKIPPED: {where} (GGEN_SKIP_POSTGRES=1)", file=sys.stderr)
                    return
                if not url:
                    found.add(where, "a PostgreSQL-ledger governor needs GGEN_TEST_DATABASE_URL")
                    return
                env[name] = fresh_schema(url, f"deploy_{crate.name}")
            elif key == "oidc-email":
                env[name] = "pusher@example-project.iam.gserviceaccount.com"
            elif key == "marketplace-oidc-email":
                env[name] = "marketplace-push@example-project.iam.gserviceaccount.com"
            elif key == "marketplace-audience":
                env[name] = "https://governor.example/marketplace/pubsub"
            elif key == "webhook-url":
                env[name] = "http://127.0.0.1:9/hooks"
            else:
                env[name] = secrets.token_hex(16)
        # The preflight, as `serve` runs it first: every problem named.
        check = subprocess.run([str(binary), *args, "--check"], env=env, capture_output=True, text=True, timeout=60)
        if check.returncode != 0:
            found.add(where, f"`serve --check` exits {check.returncode}: {check.stderr.strip()[-2000:]}")
            return
        log = (work / "serve.log").open("w+")
        process = subprocess.Popen([str(binary), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            ready = 0
            while time.monotonic() < deadline and process.poll() is None:
                ready = get(f"http://127.0.0.1:{port}/readyz")
                if ready == 200:
                    break
                time.sleep(0.1)
            if ready != 200:
                log.seek(0)
                found.add(where, f"not ready within 30 s (exit {process.poll()}): {log.read()[-2000:]}")
                return
            probes = {"livenessProbe", "readinessProbe", "startupProbe"}
            for probe in sorted(probes):
                path = container[probe]["httpGet"]["path"]
                status = get(f"http://127.0.0.1:{port}{path}")
                if status != 200:
                    found.add(where, f"{probe} path {path} answers {status}")
            annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
            metrics = annotations.get("prometheus.io/path")
            if metrics and get(f"http://127.0.0.1:{port}{metrics}") != 200:
                found.add(where, f"the scrape path {metrics} does not answer 200")
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    code = process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
                if code != 0:
                    log.seek(0)
                    found.add(where, f"exit {code} after SIGTERM: {log.read()[-2000:]}")
            log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def command_programs(crate: Path) -> list[str]:
    spec = spec_of(crate)
    return sorted(
        {a["params"]["program"] for a in spec.get("actions", []) if a.get("adapter") == "command" and "program" in a.get("params", {})}
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crates", nargs="+", type=Path, help="generated crate folders (generated/<id>)")
    parser.add_argument("--bin", type=Path, help="folder holding the governor binaries: also start each one")
    options = parser.parse_args()
    found = Findings()
    for crate in options.crates:
        paths = sorted((crate / "deploy").glob("*.yaml")) + sorted((crate / "deploy").glob("*.yaml.example"))
        manifests = {p.name: load_documents(p) for p in paths}
        for name, docs in manifests.items():
            validate_schemas(crate / "deploy" / name, docs, found)
        if "kubernetes.yaml" not in manifests or "secret.yaml.example" not in manifests:
            found.add(str(crate / "deploy"), "kubernetes.yaml or secret.yaml.example is missing")
            continue
        workload = cross_check(crate, manifests["kubernetes.yaml"], manifests["secret.yaml.example"], found)
        if workload is not None and options.bin is not None:
            start(crate, workload, options.bin, found)
    return found.report("check-deploy", options.crates)


if __name__ == "__main__":
    sys.exit(main())
