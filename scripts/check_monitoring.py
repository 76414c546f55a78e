"""Checks a generated governor's monitoring assets (run through scripts/check-monitoring).

For each crate folder given (generated/<id>):

1. `promtool check rules` on monitoring/rules.yaml, and `promtool test rules`
   on monitoring/rules.test.yaml, which must expect every alert of the rules
   to fire at least once;
2. monitoring/prometheus-rule.yaml is a PrometheusRule holding exactly the
   groups of rules.yaml;
3. every query of monitoring/dashboard.json parses (each is checked by
   promtool as a recording rule, Grafana's variables filled in);
4. with --bin DIR: the governor binary from DIR is started and scraped, and
   every `governor_*` metric the rules and the dashboard use is one it
   exports, with the SKU's `sku` label.

Prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from check_deploy import Findings, free_port, get, governor_binary

METRIC = re.compile(r"\bgovernor_[a-z0-9_]+")
# Grafana's variables, as a query sees them once filled in.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*", "${datasource}": ""}


def promtool(promtool_path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool_path, *args], capture_output=True, text=True, timeout=300)


def check_rules(crate: Path, tool: str, found: Findings) -> dict | None:
    monitoring = crate / "monitoring"
    rules_path = monitoring / "rules.yaml"
    result = promtool(tool, "check", "rules", str(rules_path))
    if result.returncode != 0:
        found.add(str(rules_path), f"promtool check rules: {result.stdout}{result.stderr}")
        return None
    result = promtool(tool, "test", "rules", str(monitoring / "rules.test.yaml"))
    if result.returncode != 0:
        found.add(str(monitoring / "rules.test.yaml"), f"promtool test rules: {result.stdout}{result.stderr}")
    rules = yaml.safe_load(rules_path.read_text(encoding="utf-8"))
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((monitoring / "rules.test.yaml").read_text(encoding="utf-8"))
    tested = {
        case["alertname"]
        for test in tests.get("tests", [])
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    for alert in sorted(alerts - tested):
        found.add(str(monitoring / "rules.test.yaml"), f"no test expects alert {alert} to fire")

    resource = yaml.safe_load((monitoring / "prometheus-rule.yaml").read_text(encoding="utf-8"))
    where = str(monitoring / "prometheus-rule.yaml")
    if (resource.get("apiVersion"), resource.get("kind")) != ("monitoring.coreos.com/v1", "PrometheusRule"):
        found.add(where, "not a monitoring.coreos.com/v1 PrometheusRule")
    if resource.get("spec") != rules:
        found.add(where, "its spec differs from rules.yaml")
    return rules


def dashboard_queries(crate: Path, found: Findings) -> list[tuple[str, str]]:
    """(panel title, query) of every target, and the templating queries."""
    where = str(crate / "monitoring/dashboard.json")
    try:
        dashboard = json.loads((crate / "monitoring/dashboard.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        found.add(where, f"not JSON: {error}")
        return []
    queries = []
    ids = set()
    for panel in dashboard.get("panels", []):
        if panel.get("id") in ids:
            found.add(where, f"panel id {panel.get('id')} is used twice")
        ids.add(panel.get("id"))
        for target in panel.get("targets", []):
            queries.append((panel.get("title", "?"), target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        definition = variable.get("definition", "")
        inner = re.fullmatch(r"label_values\((.*), *[a-z_]+\)", definition)
        if inner:
            queries.append((f"variable {variable['name']}", inner.group(1)))
    if not queries:
        found.add(where, "no queries")
    return queries


def check_queries(crate: Path, tool: str, queries: list[tuple[str, str]], found: Findings) -> None:
    rules = []
    for i, (title, query) in enumerate(queries):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": query, "labels": {"panel": title}})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        path = f.name
    try:
        result = promtool(tool, "check", "rules", path)
        if result.returncode != 0:
            found.add(str(crate / "monitoring/dashboard.json"), f"a query does not parse: {result.stdout}{result.stderr}")
    finally:
        Path(path).unlink()


def scrape(crate: Path, bin_dir: Path, found: Findings) -> str | None:
    located = governor_binary(crate, bin_dir, "scrape", found)
    if located is None:
        return None
    binary, where = located
    work = Path(tempfile.mkdtemp(prefix="ggen-monitoring-"))
    port = free_port()
    args = ["serve", "--listen", f"127.0.0.1:{port}", "--ledger", str(work / "ledger"),
            "--insecure-no-auth", "--no-pubsub", "--actions", "log"]
    process = subprocess.Popen([str(binary), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if get(f"http://127.0.0.1:{port}/readyz") == 200:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    return response.read().decode()
            time.sleep(0.1)
        found.add(where, f"not ready within 30 s (exit {process.poll()})")
        return None
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


def exported(text: str) -> tuple[set[str], set[str]]:
    """Series names of a scrape (histograms with their _bucket/_sum/_count),
    and the `sku` label values seen."""
    names, skus = set(), set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
        skus.update(re.findall(r'sku="([^"]*)"', line))
    return names, skus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crates", nargs="+", type=Path, help="generated crate folders (generated/<id>)")
    parser.add_argument("--promtool", required=True, help="the promtool binary")
    parser.add_argument("--bin", type=Path, help="folder of the governor binaries: scrape each")
    options = parser.parse_args()
    found = Findings()
    for crate in options.crates:
        rules = check_rules(crate, options.promtool, found)
        queries = dashboard_queries(crate, found)
        check_queries(crate, options.promtool, queries, found)
        if options.bin is None or rules is None:
            continue
        text = scrape(crate, options.bin, found)
        if text is None:
            continue
        names, skus = exported(text)
        spec_id = json.loads((crate / "ggen-manifest.json").read_text(encoding="utf-8"))["sku"]["id"]
        if skus != {spec_id}:
            found.add(str(crate), f"the scrape's sku labels are {sorted(skus)}, not just {spec_id!r}")
        used = {}
        for group in rules["groups"]:
            for rule in group["rules"]:
                for metric in METRIC.findall(rule["expr"]):
                    used.setdefault(metric, f"rule {rule.get('alert') or rule.get('record')}")
        for title, query in queries:
            for metric in METRIC.findall(query):
                used.setdefault(metric, f"dashboard panel {title!r}")
        for metric, user in sorted(used.items()):
            if metric not in names:
                found.add(str(crate), f"{user} uses {metric}, which the governor does not export")
    return found.report("check-monitoring", options.crates)


if __name__ == "__main__":
    sys.exit(main())
