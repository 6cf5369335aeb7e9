#!/usr/bin/env python3
"""Checks of the alerting bundle that promtool, amtool and check-jsonschema do
not cover: cross-file consistency, test coverage of every alert, the
dashboard's queries, the compose file's wiring, the Dockerfile, and a live
Alertmanager with the bundle's routing and inhibition rules.

Run by scripts/check-bundle, one subcommand per check:

    checks.py alerts
    checks.py dashboard --promtool promtool
    checks.py compose
    checks.py dockerfile [--hadolint PATH]
    checks.py alertmanager --amtool amtool --alertmanager prometheus-alertmanager
    checks.py secrets

Each prints what it found wrong and exits 1 if anything was.
"""

import argparse
import fnmatch
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "prometheus" / "rules"
TESTS_DIR = ROOT / "prometheus" / "tests"
ALERTMANAGER_YML = ROOT / "prometheus" / "alertmanager.yml"
PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"
TEMPLATES_DIR = ROOT / "prometheus" / "templates"
DASHBOARD = ROOT / "grafana" / "dashboards" / "pgbackup.json"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "pgbackup.yml"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MONITORING_DOCS = [ROOT / "docs" / "alerts.md"]

# The metrics of the interface contract, as pgbackup exposes them.
# WAL archiving (BACKUP_WAL_ARCHIVE=true): per instance, no database label.
WAL_METRICS = {
    "backup_wal_last_archived_timestamp_seconds",
    "backup_wal_archived_segments_total",
    "backup_wal_archive_lag_bytes",
    "backup_wal_slot_retained_bytes",
    "backup_last_basebackup_timestamp_seconds",
    "backup_recovery_window_seconds",
}
METRICS = {
    "backup_last_success_timestamp_seconds",
    "backup_last_attempt_timestamp_seconds",
    "backup_last_duration_seconds",
    "backup_last_size_bytes",
    "backup_last_dump_bytes",
    "backup_last_status",
    "backup_duration_seconds_bucket",
    "backup_duration_seconds_sum",
    "backup_duration_seconds_count",
    "backup_attempts_total",
    "backup_failures_total",
    "backup_in_progress",
    "backup_next_run_timestamp_seconds",
    "backup_stored_objects",
    "backup_stored_bytes",
    "backup_retention_deleted_total",
    "backup_webhook_deliveries_total",
    "backup_last_verified_timestamp_seconds",
    "backup_build_info",
    # Roles and tablespaces (BACKUP_GLOBALS): per instance, no database label.
    "backup_globals_last_success_timestamp_seconds",
    "backup_globals_last_status",
} | WAL_METRICS
# Series without a database label. The dashboard shows them for the instances
# of the selected databases: joined on (instance, job) to a series filtered by
# database=~"$database".
PER_INSTANCE_METRICS = {m for m in METRICS if m.startswith("backup_globals_")} | WAL_METRICS
# Alerts the contract names; others may be added.
CONTRACT_ALERTS = {
    "BackupTooOld",
    "BackupNeverSucceeded",
    "BackupFailed",
    "BackupSizeAnomaly",
    "BackupExporterDown",
}
RUNBOOK_BASE = "https://github.com/pgbackup/pgbackup/blob/main/docs/alerts.md#"
SEVERITIES = {"critical", "warning"}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}


class Problems:
    """Collects findings; exit status 1 if there are any."""

    def __init__(self, name):
        self.name = name
        self.items = []

    def add(self, message):
        self.items.append(message)
        print(f"  {self.name}: {message}", file=sys.stderr)

    def check(self, condition, message):
        if not condition:
            self.add(message)
        return condition

    def finish(self, ok_message):
        if self.items:
            print(f"  {self.name}: {len(self.items)} problem(s)", file=sys.stderr)
            return 1
        print(f"  {self.name}: {ok_message}")
        return 0


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def duration_seconds(text):
    """Prometheus duration ("1h30m", "5m", "30s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def unknown_metrics(expr):
    """backup_* identifiers in a PromQL expression that the contract lacks."""
    names = set(re.findall(r"\b(backup_[a-zA-Z0-9_:]*)", strip_strings(expr)))
    return sorted(names - METRICS)


def github_anchor(heading):
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def doc_anchors():
    anchors = set()
    for path in MONITORING_DOCS:
        if not path.exists():
            continue
        in_code = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                in_code = not in_code
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m and not in_code:
                anchors.add(github_anchor(m.group(1)))
    return anchors


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# alerts


def alert_rules():
    """(file, group, rule) for every alerting rule."""
    out = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in (load_yaml(path) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    out.append((path, group["name"], rule))
    return out


def cmd_alerts(_args):
    p = Problems("alerts")
    rules = alert_rules()
    names = {r["alert"] for _, _, r in rules}
    p.check(rules, f"no alerting rules in {RULES_DIR}")
    for missing in sorted(CONTRACT_ALERTS - names):
        p.add(f"contract alert {missing} has no rule")

    anchors = doc_anchors()
    bases = set()
    for path, group, rule in rules:
        where = f"{path.name}/{group}/{rule['alert']}"
        p.check(rule["alert"].startswith("Backup"), f"{where}: alert names start with Backup")
        p.check("for" in rule, f"{where}: no `for`")
        if "for" in rule:
            try:
                duration_seconds(rule["for"])
            except ValueError as e:
                p.add(f"{where}: {e}")
        labels = rule.get("labels") or {}
        p.check(labels.get("severity") in SEVERITIES,
                f"{where}: severity must be one of {sorted(SEVERITIES)}, is {labels.get('severity')!r}")
        ann = rule.get("annotations") or {}
        summary = ann.get("summary", "")
        p.check(summary and "{{" not in summary, f"{where}: summary must be a static sentence")
        p.check("{{" in ann.get("description", ""), f"{where}: description must be templated")
        url = ann.get("runbook_url", "")
        anchor = rule["alert"].lower()
        # A fork points the base at its own docs; the anchor is the alert's name.
        p.check(url.endswith("/docs/alerts.md#" + anchor),
                f"{where}: runbook_url must end in docs/alerts.md#{anchor}")
        bases.add(url.rsplit("#", 1)[0])
        p.check(anchor in anchors,
                f"{where}: no heading '{rule['alert']}' (anchor #{anchor}) in "
                + " or ".join(str(d.relative_to(ROOT)) for d in MONITORING_DOCS))
        for name in unknown_metrics(rule["expr"]):
            p.add(f"{where}: expression uses {name}, which pgbackup does not export")
        if "up" in re.findall(r"\b([a-zA-Z_]+)\s*\{", strip_strings(rule["expr"])):
            p.check('job="backup"' in rule["expr"], f"{where}: up must be selected with job=\"backup\"")

    p.check(len(bases) <= 1, f"runbook_url bases differ: {sorted(bases)}")
    if bases and bases != {RUNBOOK_BASE.rstrip("#")}:
        print(f"  alerts: runbook base is {bases.pop()} (upstream: {RUNBOOK_BASE.rstrip('#')})")

    # Every alert is tested firing and not firing, at an evaluation interval of 5m or less.
    fired, silent = set(), set()
    test_files = sorted(TESTS_DIR.glob("*.yml"))
    p.check(test_files, f"no test files in {TESTS_DIR}")
    for path in test_files:
        doc = load_yaml(path) or {}
        interval = duration_seconds(doc.get("evaluation_interval", "1m"))
        p.check(interval <= 300, f"{path.name}: evaluation_interval must be 5m or less")
        for test in doc.get("tests", []):
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else silent).add(case["alertname"])
                p.check(case["alertname"] in names,
                        f"{path.name}: test for unknown alert {case['alertname']}")
    for name in sorted(names):
        p.check(name in fired, f"{name}: no test where it fires")
        p.check(name in silent, f"{name}: no test where it stays silent")
    return p.finish(f"{len(rules)} rules for {len(names)} alerts, each documented and tested both ways")


# --------------------------------------------------------------------------
# dashboard


def panels_of(dashboard):
    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))
    return list(walk(dashboard.get("panels", [])))


GRAFANA_VARIABLES = {
    # Multi-value variables become regex alternatives; All is ".*".
    "database": ".*",
    "__rate_interval": "5m",
    "__interval": "5m",
    "__range": "1d",
    "__range_s": "86400",
    "__range_ms": "86400000",
    "__interval_ms": "300000",
}


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return GRAFANA_VARIABLES.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def cmd_dashboard(args):
    p = Problems("dashboard")
    text = DASHBOARD.read_text(encoding="utf-8")
    dash = json.loads(text)
    p.check("__inputs" not in dash, "has __inputs (an export for sharing); provisioned dashboards must not")
    p.check("${DS_" not in text, "refers to an import-time ${DS_...} input")
    p.check(dash.get("uid"), "no dashboard uid")

    uids = [ds.get("uid") for ds in load_yaml(DATASOURCES).get("datasources", []) if ds.get("type") == "prometheus"]
    p.check(len(uids) == 1, f"{DATASOURCES.name}: expected one Prometheus data source, found {len(uids)}")
    prom_uid = uids[0] if uids else None

    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds_var = variables.get("datasource")
    if p.check(ds_var and ds_var.get("type") == "datasource" and ds_var.get("query") == "prometheus",
               "needs a data source variable named 'datasource' of type prometheus"):
        p.check(ds_var.get("current", {}).get("value") == prom_uid,
                f"data source variable defaults to {ds_var.get('current', {}).get('value')!r}, "
                f"the provisioned uid is {prom_uid!r}")
    db_var = variables.get("database")
    if p.check(db_var is not None, "needs a 'database' variable"):
        query = db_var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        p.check(query == "label_values(backup_last_status, database)",
                f"database variable query is {query!r}")
        p.check(db_var.get("datasource") == DATASOURCE_REF, "database variable must use ${datasource}")

    exprs = []
    ids = set()
    for panel in panels_of(dash):
        pid = panel.get("id")
        p.check(pid not in ids, f"panel id {pid} used twice")
        ids.add(pid)
        grid = panel.get("gridPos", {})
        p.check(grid and grid.get("x", 0) + grid.get("w", 0) <= 24, f"panel {pid}: gridPos outside 24 columns")
        if panel.get("type") == "row":
            continue
        title = panel.get("title", f"panel {pid}")
        p.check(panel.get("datasource") == DATASOURCE_REF, f"{title}: data source must be {DATASOURCE_REF}")
        targets = panel.get("targets", [])
        p.check(targets, f"{title}: no queries")
        for t in targets:
            p.check(t.get("datasource") == DATASOURCE_REF, f"{title}/{t.get('refId')}: data source must be {DATASOURCE_REF}")
            expr = t.get("expr", "")
            if p.check(expr, f"{title}/{t.get('refId')}: no expr"):
                exprs.append((f"{title}/{t.get('refId')}", expr))
    if db_var:
        exprs.append(("variable database", "backup_last_status"))

    rules = []
    for i, (where, expr) in enumerate(exprs):
        plain = substitute(expr)
        if not p.check("$" not in plain, f"{where}: unknown Grafana variable in {expr!r}"):
            continue
        for name in unknown_metrics(plain):
            p.add(f"{where}: uses {name}, which pgbackup does not export")
        rules.append({"record": f"dashboard_query_{i}", "expr": plain})
        # Per-database series follow the database variable (build info is per process).
        if where != "variable database":
            for name, matchers in re.findall(r"\b(backup_\w+)(\{[^}]*\})?", expr):
                if name in PER_INSTANCE_METRICS:
                    if "on (instance, job)" not in expr or 'database=~"$database"' not in expr:
                        p.add(f"{where}: {name} has no database label; join it on (instance, job) "
                              f"to a series filtered by database=~\"$database\"")
                elif name != "backup_build_info" and 'database=~"$database"' not in matchers:
                    p.add(f"{where}: {name} is not filtered by database=~\"$database\"")

    # promtool parses every query as a recording rule; on failure, name the culprits.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard-queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
        res = subprocess.run([args.promtool, "check", "rules", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            for i, (where, expr) in enumerate(exprs):
                single = Path(tmp) / f"q{i}.yml"
                single.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [
                    {"record": "dashboard_query", "expr": substitute(expr)}]}]}))
                r = subprocess.run([args.promtool, "check", "rules", str(single)], capture_output=True, text=True)
                if r.returncode != 0:
                    detail = next((ln.split("could not parse expression: ", 1)[-1]
                                   for ln in (r.stdout + r.stderr).splitlines() if "parse" in ln), "")
                    p.add(f"{where}: invalid PromQL ({detail.strip()}): {expr}")

    # The provider reads the directory compose.yaml mounts the dashboards into.
    provider_paths = [pr.get("options", {}).get("path") for pr in load_yaml(DASHBOARD_PROVIDERS).get("providers", [])]
    grafana = (load_yaml(COMPOSE).get("services") or {}).get("grafana", {})
    targets = {src.rstrip("/"): dst for src, dst in bind_mounts(grafana)}
    mounted = targets.get("./grafana/dashboards")
    p.check(mounted in provider_paths,
            f"dashboard provider path {provider_paths} is not where compose mounts grafana/dashboards ({mounted})")
    return p.finish(f"{len(exprs)} queries parse, data source uid {prom_uid!r} used throughout")


# --------------------------------------------------------------------------
# compose


def bind_mounts(service):
    """(source, target) of the ./relative bind mounts of a compose service."""
    out = []
    for v in service.get("volumes", []) or []:
        if isinstance(v, str):
            parts = v.split(":")
            if parts[0].startswith("."):
                out.append((parts[0], parts[1]))
        elif v.get("type") == "bind":
            out.append((v["source"], v["target"]))
    return out


def interpolations(text):
    """(name, has_default) for every ${...} in a compose file, $$ excluded."""
    out = []
    for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?", text):
        out.append((m.group(1), m.group(2) in (":-", "-")))
    return out


def cmd_compose(_args):
    p = Problems("compose")
    text = COMPOSE.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    services = doc.get("services", {})
    p.check("name" not in doc, "top-level name: Compose 1.x rejects it; set COMPOSE_PROJECT_NAME in .env.example")
    required = {"postgres", "minio", "minio-init", "pgbackup", "prometheus", "alertmanager", "grafana"}
    for name in sorted(required - services.keys()):
        p.add(f"no service {name}")

    pg = services.get("pgbackup", {})
    build = pg.get("build")
    p.check(build == "." or (isinstance(build, dict) and build.get("context") == "."),
            "pgbackup must be built from this repository (build: .)")
    env = pg.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    expected = {
        "POSTGRES_HOST": "postgres",
        "AWS_S3_ENDPOINT": "http://minio:9000",
        "AWS_S3_FORCE_PATH_STYLE": "true",
        "AWS_S3_REGION": "us-east-1",
        "BACKUP_LISTEN_ADDRESS": "0.0.0.0:9854",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
        "AWS_SECRET_ACCESS_KEY_FILE": "/run/secrets/aws_secret_access_key",
    }
    for key, value in expected.items():
        p.check(str(env.get(key)) == value, f"pgbackup: {key} must be {value}, is {env.get(key)!r}")
    # Every other setting comes from .env, which must hold the rest and no secret.
    env_file = pg.get("env_file")
    env_files = env_file if isinstance(env_file, list) else [env_file]
    p.check(any(str(f).endswith(".env}") or str(f) == ".env" for f in env_files if f),
            f"pgbackup: env_file must be .env, is {env_file!r}")
    example = dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    for key in ("POSTGRES_DB", "POSTGRES_USER", "AWS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "BACKUP_CRON_SCHEDULE", "RUN_ON_STARTUP"):
        p.check(key in example, f".env.example: {key} not set (pgbackup reads it through env_file)")
    p.check(example.get("BACKUP_CRON_SCHEDULE", "").strip("\"'") == "0 3 * * *",
            ".env.example: BACKUP_CRON_SCHEDULE must be a production schedule; leave demo schedules commented")
    for key in example:
        p.check(not re.search(r"PASSWORD|SECRET|TOKEN|WEBHOOK_URL$", key),
                f".env.example: {key} is a secret; pgbackup reads all of .env, so secrets go in secrets/ files")
    secrets_of = lambda svc: {s if isinstance(s, str) else s.get("source") for s in svc.get("secrets", []) or []}
    for name, needed in (("pgbackup", {"postgres_password", "aws_secret_access_key"}),
                         ("postgres", {"postgres_password"}), ("minio", {"minio_root_password"})):
        missing = needed - secrets_of(services.get(name, {}))
        p.check(not missing, f"{name}: secrets {sorted(missing)} not mounted")

    for name, svc in services.items():
        one_shot = svc.get("restart") == "no"
        p.check(one_shot or "healthcheck" in svc, f"{name}: no healthcheck")
        deps = svc.get("depends_on", {})
        p.check(isinstance(deps, dict), f"{name}: depends_on must name a condition for each service")
        if isinstance(deps, dict):
            for dep, spec in deps.items():
                p.check(dep in services, f"{name}: depends on unknown service {dep}")
                p.check(isinstance(spec, dict) and spec.get("condition") in
                        ("service_healthy", "service_completed_successfully", "service_started"),
                        f"{name}: depends_on {dep} without a condition")
                if isinstance(spec, dict) and spec.get("condition") == "service_healthy":
                    p.check(dep == "pgbackup" or "healthcheck" in services.get(dep, {}),
                            f"{name}: waits for {dep} to be healthy, which has no healthcheck")
        image = str(svc.get("image", ""))
        default = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", image)
        if "build" not in svc:
            p.check(re.search(r":[^/]+$", default) and not default.endswith(":latest"),
                    f"{name}: image {image!r} needs a fixed tag")
        senv = svc.get("environment", {}) or {}
        if isinstance(senv, list):
            senv = dict(item.split("=", 1) for item in senv)
        for key, value in senv.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|WEBHOOK", key):
                p.check(key.endswith("_FILE") and str(value).startswith("/run/secrets/"),
                        f"{name}: {key} must be a _FILE variable naming a file in /run/secrets, not a value")
        for src, _dst in bind_mounts(svc):
            p.check((ROOT / src).exists(), f"{name}: bind mount source {src} does not exist")

    # Every variable without a default is documented in .env.example.
    documented = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    for name, has_default in interpolations(text):
        p.check(has_default or name in documented, f"${{{name}}} has no default and is not in .env.example")
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Z_]*(PASSWORD|SECRET)[A-Z_]*)=(.*)$", line)
        if m:
            p.check(m.group(3) in ("change-me", ""), f".env.example: {m.group(1)} must be a placeholder")

    # Prometheus reads rule files relative to its config; they must be mounted there.
    prom = services.get("prometheus", {})
    mounts = dict(bind_mounts(prom))
    p.check(mounts.get("./prometheus/prometheus.yml") == "/etc/prometheus/prometheus.yml",
            "prometheus: prometheus/prometheus.yml must be mounted at /etc/prometheus/prometheus.yml")
    for pattern in load_yaml(PROMETHEUS_YML).get("rule_files", []):
        target = os.path.normpath(os.path.join("/etc/prometheus", os.path.dirname(pattern)))
        p.check(target in mounts.values(), f"prometheus: rule_files {pattern} resolves to {target}, which is not mounted")

    # Alertmanager's Slack URL file and templates are where its config expects them.
    am = services.get("alertmanager", {})
    am_conf = load_yaml(ALERTMANAGER_YML)
    url_files = {c.get("api_url_file") for r in am_conf.get("receivers", []) for c in r.get("slack_configs", [])}
    secret_targets = {s.get("target") for s in am.get("secrets", []) if isinstance(s, dict)}
    for f in sorted(u for u in url_files if u):
        p.check(f in secret_targets, f"alertmanager: {f} is not mounted (secrets: target)")
    am_mounts = dict(bind_mounts(am))
    for pattern in am_conf.get("templates", []):
        p.check(os.path.dirname(pattern) in am_mounts.values(), f"alertmanager: templates {pattern} not mounted")
    for secret in (doc.get("secrets") or {}).values():
        p.check("${" in str(secret.get("file", "")) or "secrets/" in str(secret.get("file", "")),
                "secrets: files must live in the git-ignored secrets/ or come from .env")
    gitignore = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    for entry in (".env", "secrets/"):
        p.check(entry in gitignore, f".gitignore must list {entry}")
    return p.finish(f"{len(services)} services wired, no secret in the file")


# --------------------------------------------------------------------------
# dockerfile


def dockerignore_excludes(path, patterns):
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            excluded = not negate
    return excluded


def cmd_dockerfile(args):
    from dockerfile_parse import DockerfileParser

    p = Problems("dockerfile")
    dfp = DockerfileParser(path=str(DOCKERFILE))
    instructions = dfp.structure
    # Build arguments declared before the first FROM: their defaults are what
    # `docker build .` uses in FROM lines.
    global_args = {}
    stages = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append({"from": ins["value"], "name": name, "ins": []})
        elif stages:
            stages[-1]["ins"].append(ins)
        elif ins["instruction"] == "ARG" and "=" in ins["value"]:
            k, v = ins["value"].split("=", 1)
            global_args[k] = v.strip('"')
    if not p.check(len(stages) >= 2, "must be multi-stage"):
        return p.finish("")
    # Railway's builder wants cache mount ids of its own and rejects others;
    # plain builders without BuildKit reject the flag altogether.
    for ins in instructions:
        p.check(not (ins["instruction"] == "RUN" and re.search(r"--mount\b", ins["value"])),
                f"line {ins['startline'] + 1}: RUN --mount needs BuildKit cache ids Railway does not accept")
    by_name = {st["name"]: st for st in stages if st["name"]}

    def expand(text, args):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), text)

    def base(stage):
        return expand(stage["from"].split()[0], global_args)

    def stage_args(stage):
        out = {}
        for i in stage["ins"]:
            if i["instruction"] == "ARG" and "=" in i["value"]:
                k, v = i["value"].split("=", 1)
                out[k] = v.strip('"')
        return out

    def chain(stage):
        """The stage and the stages it is built FROM, the base image's first."""
        out = [stage]
        while base(out[0]) in by_name and by_name[base(out[0])] not in out:
            out.insert(0, by_name[base(out[0])])
        return out

    # What the default build (`docker build .`) runs: the last stage, the
    # stages it starts FROM and those it copies --from, transitively.
    reachable, todo = [], [stages[-1]]
    while todo:
        st = todo.pop()
        if any(st is r for r in reachable):
            continue
        reachable.append(st)
        if base(st) in by_name:
            todo.append(by_name[base(st)])
        for i in st["ins"]:
            m = re.search(r"--from=(\S+)", i["value"]) if i["instruction"] == "COPY" else None
            if m and expand(m.group(1), global_args) in by_name:
                todo.append(by_name[expand(m.group(1), global_args)])

    build = next((st for st in reachable if "cargo build" in " ".join(i["value"] for i in st["ins"])), None)
    if p.check(build is not None, "the default build must compile pgbackup (cargo build)"):
        p.check(base(build) == "rust:1-bookworm", f"build stage must start FROM rust:1-bookworm, is {base(build)}")
    runtime = chain(stages[-1])
    p.check(base(runtime[0]) == "debian:bookworm-slim",
            f"runtime stage must be debian:bookworm-slim, is {base(runtime[0])}")
    final = {"ins": [i for st in runtime for i in st["ins"]]}

    def runs(stage):
        return " ".join(i["value"] for i in stage["ins"] if i["instruction"] == "RUN")

    if build is not None:
        p.check("cargo build --release --locked" in runs(build), "build stage must run cargo build --release --locked")
    final_runs = runs(final)
    for needle in ("apt.postgresql.org", "signed-by=", "bookworm-pgdg", "ca-certificates", "rm -rf /var/lib/apt/lists"):
        p.check(needle in final_runs, f"runtime stage: no {needle!r}")
    args_ = {}
    for st in runtime:
        args_.update(stage_args(st))
    majors = set(args_.get("PG_MAJORS", "").split())
    explicit = set(re.findall(r"postgresql-client-(\d+)", final_runs))
    p.check({str(n) for n in range(13, 19)} <= (majors | explicit),
            f"PostgreSQL clients 13-18 must be installed, found {sorted(majors | explicit)}")

    def last(stage, name):
        vals = [i["value"] for i in stage["ins"] if i["instruction"] == name]
        return vals[-1] if vals else None

    user = last(final, "USER")
    p.check(user and user.split(":")[0] not in ("root", "0"), f"runtime must run as a non-root USER, is {user!r}")
    p.check("9854" in (last(final, "EXPOSE") or "").split(), "must EXPOSE 9854")
    health = last(final, "HEALTHCHECK") or ""
    p.check("CMD" in health, "no HEALTHCHECK")
    try:
        p.check(json.loads(last(final, "ENTRYPOINT") or "null") == ["pgbackup"], 'ENTRYPOINT must be ["pgbackup"]')
        p.check(json.loads(last(final, "CMD") or "null") == ["run"], 'CMD must be ["run"]')
    except json.JSONDecodeError:
        p.add("ENTRYPOINT and CMD must use the JSON (exec) form")

    # COPY sources exist and are in the build context.
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.startswith("#")]
    copied = {}
    for st in stages:
        default_build = any(st is r for r in reachable)
        for ins in st["ins"]:
            if ins["instruction"] not in ("COPY", "ADD") or "--from=" in ins["value"]:
                continue
            words = [expand(w, stage_args(st)) for w in ins["value"].split() if not w.startswith("--")]
            if not default_build:
                # Another way to build (e.g. a binary built outside): its
                # sources need not exist, but must reach the build context.
                for src in words[:-1]:
                    p.check(not dockerignore_excludes(src, patterns),
                            f"COPY source {src} (stage {st['name']}) is excluded by .dockerignore")
                continue
            for src in words[:-1]:
                copied[src] = words[-1]
                p.check((ROOT / src).exists(), f"COPY source {src} does not exist")
                p.check(not dockerignore_excludes(src, patterns), f"COPY source {src} is excluded by .dockerignore")
                if (ROOT / src).is_dir():
                    for f in (ROOT / src).rglob("*"):
                        rel = str(f.relative_to(ROOT))
                        if f.is_file() and dockerignore_excludes(rel, patterns):
                            p.add(f"{rel} is excluded by .dockerignore but its directory is copied")
    for junk in ("target", ".git", ".env", "secrets/slack_webhook_url", "demo-backups"):
        p.check(dockerignore_excludes(junk, patterns), f".dockerignore must exclude {junk}")

    # The health check is the binary's own subcommand, in exec form (no
    # shell in the way); tests/it/webconfig.rs runs it against real servers.
    try:
        p.check(json.loads(health.split("CMD", 1)[1]) == ["pgbackup", "healthcheck"],
                f'HEALTHCHECK must run CMD ["pgbackup", "healthcheck"], runs {health!r}')
    except (IndexError, json.JSONDecodeError):
        p.add(f'HEALTHCHECK must use the exec form CMD ["pgbackup", "healthcheck"], is {health!r}')

    if args.hadolint:
        res = subprocess.run([args.hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            for line in (res.stdout + res.stderr).strip().splitlines():
                p.add(f"hadolint: {line}")
    return p.finish(f"{len(stages)} stages, non-root, health check is `pgbackup healthcheck`"
                    + (", hadolint clean" if args.hadolint else " (hadolint not available)"))


# --------------------------------------------------------------------------
# alertmanager


class _Slack(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Slack.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_):
        pass


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read()
        return json.loads(text) if text else None


def cmd_alertmanager(args):
    p = Problems("alertmanager")
    rules = {r["alert"]: r for _, _, r in alert_rules()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slack_port = free_port()
        # A dummy URL file, written the way the docs tell users to (trailing newline).
        (tmp / "slack_webhook_url").write_text(f"http://127.0.0.1:{slack_port}/services/dummy\n")
        shutil.copytree(TEMPLATES_DIR, tmp / "templates")
        conf = load_yaml(ALERTMANAGER_YML)
        for receiver in conf.get("receivers", []):
            for sc in receiver.get("slack_configs", []):
                p.check(sc.get("api_url_file") == "/etc/alertmanager/slack_webhook_url",
                        f"{receiver['name']}: api_url_file must be /etc/alertmanager/slack_webhook_url")
                p.check("api_url" not in sc, f"{receiver['name']}: the webhook URL must not be in the file")
                sc["api_url_file"] = str(tmp / "slack_webhook_url")
        conf["templates"] = [str(tmp / "templates" / Path(t).name) for t in conf.get("templates", [])]
        conf["route"]["group_wait"] = "1s"
        conf["route"]["group_interval"] = "1s"
        path = tmp / "alertmanager.yml"
        path.write_text(yaml.safe_dump(conf, sort_keys=False))

        # The rendered config (with the templates where it finds them) passes amtool.
        res = subprocess.run([args.amtool, "check-config", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            p.add("amtool check-config with the templates and a dummy URL file: " + (res.stdout + res.stderr).strip())
            return p.finish("")

        # Routing: severity picks the receiver.
        for labels, receiver in (("severity=critical", "slack-critical"), ("severity=warning", "slack-warning"),
                                 ("alertname=Other", "slack-warning")):
            res = subprocess.run([args.amtool, "config", "routes", "test", f"--config.file={path}",
                                  f"--verify.receivers={receiver}", *labels.split()], capture_output=True, text=True)
            p.check(res.returncode == 0, f"route {labels} should reach {receiver}: {res.stdout.strip()} {res.stderr.strip()}")

        # A live Alertmanager: which alerts are inhibited, and what reaches Slack.
        _Slack.received = []
        slack = http.server.ThreadingHTTPServer(("127.0.0.1", slack_port), _Slack)
        threading.Thread(target=slack.serve_forever, daemon=True).start()
        am_port = free_port()
        base = f"http://127.0.0.1:{am_port}"
        log = open(tmp / "alertmanager.log", "w")
        proc = subprocess.Popen([args.alertmanager, f"--config.file={path}", f"--storage.path={tmp / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                                 "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/-/ready", timeout=1)
                    break
                except (urllib.error.URLError, ConnectionError):
                    if proc.poll() is not None:
                        break
                    time.sleep(0.1)
            else:
                p.add("Alertmanager did not become ready")
            if proc.poll() is not None:
                p.add("Alertmanager exited: " + (tmp / "alertmanager.log").read_text())
                return p.finish("")

            def alert(name, job="backup", instance=None, database=None):
                labels = {"alertname": name, "job": job,
                          "severity": rules[name]["labels"]["severity"] if name in rules else "warning"}
                if instance:
                    labels["instance"] = instance
                if database:
                    labels["database"] = database
                ann = dict(rules.get(name, {}).get("annotations", {}))
                ann["description"] = f"{name} test description"
                return labels, ann

            # (alert, expected state); inhibition is scoped by job/instance/database.
            cases = [
                (alert("BackupExporterDown", instance="pg-a:9854"), "active"),
                (alert("BackupTooOld", instance="pg-a:9854", database="a"), "suppressed"),
                (alert("BackupTooOld", instance="pg-b:9854", database="b"), "active"),
                (alert("BackupFailed", instance="pg-b:9854", database="b"), "active"),
                (alert("BackupRunningTooLong", instance="pg-c:9854", database="c"), "active"),
                (alert("BackupScheduleStalled", instance="pg-c:9854", database="c"), "suppressed"),
                (alert("BackupScheduleStalled", instance="pg-g:9854", database="g"), "active"),
                (alert("BackupVerificationFailed", instance="pg-d:9854", database="d"), "active"),
                (alert("BackupVerificationTooOld", instance="pg-d:9854", database="d"), "suppressed"),
                (alert("BackupRetentionFailing", instance="pg-e:9854", database="e"), "active"),
                (alert("BackupRetentionStalled", instance="pg-e:9854", database="e"), "suppressed"),
                (alert("BackupExporterDown", job="backup-gone"), "active"),
                (alert("BackupWebhookFailing", job="backup-gone", instance="pg-f:9854", database="f"), "suppressed"),
                # Several databases on one instance: one group, one message each.
                (alert("BackupFailed", instance="pg-b:9854", database="b2"), "active"),
                # The globals have no database label; the exporter inhibits them too.
                (alert("BackupGlobalsFailed", instance="pg-a:9854"), "suppressed"),
                (alert("BackupGlobalsFailed", instance="pg-h:9854"), "active"),
            ]
            now = datetime.now(timezone.utc)
            http_json("POST", base + "/api/v2/alerts", [
                {"labels": labels, "annotations": ann, "startsAt": now.isoformat(),
                 "endsAt": (now + timedelta(hours=1)).isoformat(), "generatorURL": "http://prometheus:9090/graph"}
                for (labels, ann), _ in cases])

            def key(labels):
                return tuple(sorted((k, v) for k, v in labels.items() if k != "severity"))

            want = {key(labels): state for (labels, _), state in cases}
            deadline = time.time() + 15
            while True:
                got = {key(a["labels"]): a["status"]["state"] for a in http_json("GET", base + "/api/v2/alerts")}
                if all(got.get(k) == s for k, s in want.items()) or time.time() > deadline:
                    break
                time.sleep(0.2)
            for k, state in want.items():
                p.check(got.get(k) == state, f"{dict(k)}: expected {state}, Alertmanager says {got.get(k)}")

            # One Slack message per active alert (each is its own group), none for inhibited ones.
            expected_msgs = sum(1 for _, s in cases if s == "active")
            deadline = time.time() + 20
            while len(_Slack.received) < expected_msgs and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(2)  # anything inhibited would arrive by now
            attachments = [a for m in _Slack.received for a in m.get("attachments", [])]
            titles = [a.get("title", "") for a in attachments]
            p.check(len(titles) == expected_msgs,
                    f"expected {expected_msgs} Slack messages, got {len(titles)}: {titles}")
            for (labels, ann), state in cases:
                name, db, instance = labels["alertname"], labels.get("database"), labels.get("instance")
                title = f"[FIRING:1] {name}" + (f" ({db})" if db else "")
                # The title names no instance (alerts without a database share
                # it); the text does.
                n = sum(1 for a in attachments if a.get("title") == title
                        and (not instance or f"Instance: `{instance}`" in a.get("text", "")))
                if state == "active":
                    p.check(n >= 1, f"no Slack message titled {title!r} for {instance or 'the job'}")
                else:
                    p.check(n == 0, f"inhibited alert reached Slack: {title!r} for {instance or 'the job'}")
            for m in _Slack.received:
                for a in m.get("attachments", []):
                    name = a.get("title", "").split()[1] if len(a.get("title", "").split()) > 1 else ""
                    if name in rules:
                        url = rules[name]["annotations"]["runbook_url"]
                        p.check(url in a.get("text", ""), f"{a.get('title')}: message lacks the runbook link")
                        p.check(rules[name]["annotations"]["summary"] in a.get("text", ""),
                                f"{a.get('title')}: message lacks the summary")
                        color = "danger" if rules[name]["labels"]["severity"] == "critical" else "warning"
                        p.check(a.get("color") == color, f"{a.get('title')}: color {a.get('color')}, expected {color}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            slack.shutdown()
            slack.server_close()
    return p.finish("routing by severity, inhibitions and Slack messages behave as configured")


# --------------------------------------------------------------------------
# secrets


SECRET_PATTERNS = [
    (re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"), "Slack webhook URL"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "private key"),
]


def cmd_secrets(_args):
    p = Problems("secrets")
    try:
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        files = [str(f.relative_to(ROOT)) for f in ROOT.rglob("*")
                 if f.is_file() and not {".git", "target"} & set(f.relative_to(ROOT).parts)]
    count = 0
    for name in filter(None, files):
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        count += 1
        for pattern, what in SECRET_PATTERNS:
            if pattern.search(text):
                p.add(f"{name}: looks like a {what}")
    for name in (".env", "secrets/slack_webhook_url"):
        res = subprocess.run(["git", "ls-files", "--error-unmatch", name], cwd=ROOT, capture_output=True)
        p.check(res.returncode != 0, f"{name} is committed")
    return p.finish(f"{count} files scanned, no credential found")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("alerts")
    d = sub.add_parser("dashboard")
    d.add_argument("--promtool", default="promtool")
    sub.add_parser("compose")
    f = sub.add_parser("dockerfile")
    f.add_argument("--hadolint")
    a = sub.add_parser("alertmanager")
    a.add_argument("--amtool", default="amtool")
    a.add_argument("--alertmanager", default="prometheus-alertmanager")
    sub.add_parser("secrets")
    args = parser.parse_args()
    handler = {
        "alerts": cmd_alerts,
        "dashboard": cmd_dashboard,
        "compose": cmd_compose,
        "dockerfile": cmd_dockerfile,
        "alertmanager": cmd_alertmanager,
        "secrets": cmd_secrets,
    }[args.command]
    sys.exit(handler(args))


if __name__ == "__main__":
    main()
