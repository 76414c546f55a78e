"""Runs the CI recipe users copy (docs/examples/github-workflow.yml) on a project.

Parses the workflow (jobs, steps, pinned actions), then runs, in order and
in the project folder given, every step's `run` that calls ggen (all but
the install step: the `ggen` under test comes first on PATH), as bash with
`-euo pipefail`. A step that fails, or a workflow that does not have the
shape GitHub Actions needs, is reported; exit 1 if anything was.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow", type=Path)
    parser.add_argument("--project", type=Path, required=True, help="the project to run the steps in")
    parser.add_argument("--ggen", type=Path, required=True, help="the ggen binary to run")
    options = parser.parse_args()
    problems: list[str] = []
    workflow = yaml.safe_load(options.workflow.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as true.
    triggers = workflow.get("on", workflow.get(True))
    if not workflow.get("name") or not triggers:
        problems.append("the workflow needs a name and triggers (`on`)")
    jobs = workflow.get("jobs") or {}
    if not jobs:
        problems.append("no jobs")
    steps_to_run = []
    for job_name, job in jobs.items():
        if not job.get("runs-on"):
            problems.append(f"job {job_name}: no runs-on")
        for need in [job.get("needs")] if isinstance(job.get("needs"), str) else job.get("needs") or []:
            if need not in jobs:
                problems.append(f"job {job_name}: needs unknown job {need}")
        for i, step in enumerate(job.get("steps") or []):
            where = f"job {job_name}, step {i + 1} ({step.get('name') or step.get('uses')})"
            if ("run" in step) == ("uses" in step):
                problems.append(f"{where}: needs exactly one of run and uses")
            uses = step.get("uses")
            if uses and not re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", uses):
                problems.append(f"{where}: action `{uses}` is not pinned to a major version")
            run = step.get("run", "")
            if re.search(r"(^|\s)ggen\s", run) and step.get("id") != "install-ggen":
                steps_to_run.append((where, run))
    if not steps_to_run:
        problems.append("no step runs ggen")
    env = dict(os.environ)
    env["PATH"] = f"{options.ggen.resolve().parent}{os.pathsep}{env.get('PATH', '')}"
    for where, run in steps_to_run:
        print(f"check-ci-recipe: {where}", file=sys.stderr)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", run],
            cwd=options.project,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if result.returncode != 0:
            problems.append(f"{where}: exit {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
            break
    for problem in problems:
        print(problem)
    if problems:
        print(f"check-ci-recipe: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check-ci-recipe: {len(steps_to_run)} step(s) ran", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
