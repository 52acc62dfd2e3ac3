"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine runs here):
services, healthchecks and dependencies; every command runs an entry point the image ships,
with everything it imports; every variable set is a setting; host and app configuration
never mix."""

from __future__ import annotations

import ast
import json
import re
import shlex
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import yaml

from core.settings import PROJECT_ROOT, Settings

OURS = "fraud-scoring:latest"
EXPECTED = {
    "redis",
    "kafka",
    "feast-init",
    "serving",
    "streaming",
    "batch",
    "producer",
    "prometheus",
    "grafana",
}
LONG_RUNNING = {"redis", "kafka", "serving", "streaming", "prometheus", "grafana"}
FEAST_COMMANDS = {"apply", "materialize", "materialize-incremental", "serve"}
# Variables of third-party images, documented by them: apache/kafka maps KAFKA_* to
# server.properties, Grafana GF_<SECTION>_<KEY> to grafana.ini.
APP_STRING = re.compile(r"([a-z_][\w.]*):\w+")  # module:attribute, as uvicorn and bytewax take
THIRD_PARTY_PREFIXES = {"apache/kafka": "KAFKA_", "grafana/grafana": "GF_"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return loaded


def ours() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if s.get("image") == OURS}


def steps(command: list[str] | str) -> list[list[str]]:
    """Each program invocation in a command, splitting `sh -c "a && b"` into its parts."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


def shipped() -> set[str]:
    """The top-level directories the Dockerfile copies into the image."""
    copies = re.findall(r"^COPY\s+(\S+)\s+\./", (PROJECT_ROOT / "Dockerfile").read_text(), re.M)
    return {c.rstrip("/") for c in copies}


def console_scripts() -> dict[str, str]:
    return {ep.name: ep.module for ep in distribution("fraud-scoring").entry_points}


def entry_modules(argv: list[str]) -> list[str]:
    """The project modules one invocation runs ([] for ``cd``); AssertionError if none."""
    if argv[0] == "cd":
        assert (PROJECT_ROOT / argv[1]).is_dir() or argv[1] == "..", argv
        return []
    if argv[0] == "feast":  # in feature_repo/: feast imports the definitions there
        assert argv[1] in FEAST_COMMANDS, argv
        return ["feature_repo.features"]
    if argv[0] == "python" and argv[1] == "-m":
        name = argv[3].split(":")[0] if argv[2] == "bytewax.run" else argv[2]
        return [name]
    scripts = console_scripts()
    assert argv[0] in scripts, f"{argv[0]} is not a console script of the package"
    return [scripts[argv[0]]]


def module_file(name: str) -> Path | None:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    for path in (base / "__main__.py", base / "__init__.py", base.with_suffix(".py")):
        if path.exists():
            return path
    return None


def project_imports(module: str) -> set[str]:
    """Every project module ``module`` imports, transitively (function-level imports too, and
    ``module:attribute`` strings, which uvicorn and bytewax.run import)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        package = name if path.name in ("__init__.py", "__main__.py") else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
                source = ".".join(p for p in (base, node.module or "") if p)
                todo += [source, *(f"{source}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                target = APP_STRING.match(node.value)  # "serving.app:create_app" for uvicorn
                todo += [target[1]] if target else []
    return seen


def test_parses_with_the_expected_services() -> None:
    services = compose()["services"]
    assert set(services) >= EXPECTED
    assert {"batch", "producer"} <= set(ours())
    assert services["producer"]["profiles"] == ["demo"]


def test_every_command_runs_an_entry_point_the_image_ships_with_all_it_imports() -> None:
    needed: dict[str, set[str]] = {}
    commands = 0
    for name, service in ours().items():
        assert "command" in service, name
        for argv in steps(service["command"]):
            commands += 1
            for module in entry_modules(argv):
                assert module_file(module) is not None, f"{name}: no module {module}"
                for imported in project_imports(module):
                    needed.setdefault(imported.split(".")[0], set()).add(name)
    assert commands >= 10  # feast-init's six steps, serving, streaming, producer, batch
    assert {"core", "serving", "streaming", "batch", "feature_repo"} <= set(needed)
    missing = {top: sorted(by) for top, by in needed.items() if top not in shipped()}
    assert not missing, f"imported but not copied into the image: {missing}"


def test_dependencies_are_installed_before_the_code_is_copied_and_it_runs_as_a_user() -> None:
    lines = [line.strip() for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines()]
    install = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    first_code = next(i for i, line in enumerate(lines) if line.startswith("COPY core"))
    assert install < first_code
    assert next(line for line in lines if line.startswith("COPY")) == "COPY pyproject.toml ./"
    users = [line for line in lines if line.startswith("USER")]
    assert users and users[-1] != "USER root"


def test_healthchecks_gate_dependents_and_long_runners_restart() -> None:
    """Long-running services have a healthcheck and restart; dependents wait on it, or on a
    one-shot's completion."""
    services = compose()["services"]
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], name
        assert services[name]["restart"] in ("unless-stopped", "always"), name
    assert "8001/metrics" in " ".join(services["streaming"]["healthcheck"]["test"])
    gated = 0
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            gated += 1
            if "healthcheck" in services[dep]:
                assert cond == {"condition": "service_healthy"}, (name, dep)
            else:
                assert cond == {"condition": "service_completed_successfully"}, (name, dep)
    assert gated >= 10


def test_every_variable_a_container_gets_is_a_setting_or_its_images_own() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    checked = 0
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        image = service["image"].split(":")[0]
        for var in env:
            checked += 1
            if service["image"] == OURS:
                assert var in fields, f"{name}: {var} is not a Settings field"
            else:
                prefix = THIRD_PARTY_PREFIXES.get(image)
                assert prefix and var.startswith(prefix), f"{name}: {var} unknown to {image}"
    assert checked >= 20


def test_host_configuration_never_reaches_the_app() -> None:
    """Compose fills only FRAUD_* variables (from .env, all listed in .env.example), which are
    no settings; the containers' addresses are literal, and no host .env is passed in."""
    lines = (PROJECT_ROOT / "docker-compose.yml").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    interpolated = set(re.findall(r"\$\{(\w+)", text))
    example = (PROJECT_ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*(\w+)=", example, re.M))
    fields = {name.upper() for name in Settings.model_fields}
    assert interpolated and all(v.startswith("FRAUD_") for v in interpolated), interpolated
    assert interpolated <= listed
    assert not listed & fields
    for name, service in ours().items():
        env = service["environment"]
        assert env["REDIS_CONNECTION_STRING"] == "redis:6379", name
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert [f["path"] for f in service["env_file"]] == ["deploy/app.env"], name
    serving = compose()["services"]["serving"]
    assert serving["command"][-2:] == ["--port", "8000"]  # SERVING_PORT cannot move it


def test_kafka_serves_the_host_and_persists_with_the_recovery_store() -> None:
    services = compose()["services"]
    kafka = services["kafka"]["environment"]
    assert "EXTERNAL://localhost:" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert any(v.startswith("kafka-data:") for v in services["kafka"]["volumes"])
    recovery = services["streaming"]["command"][services["streaming"]["command"].index("-r") + 1]
    assert f"stream-recovery:{recovery}" in services["streaming"]["volumes"]
    assert {"kafka-data", "stream-recovery"} <= set(compose()["volumes"])


def test_prometheus_and_grafana_are_provisioned_from_the_repo() -> None:
    services = compose()["services"]
    mounts = [v.split(":")[0] for s in ("prometheus", "grafana") for v in services[s]["volumes"]]
    local = [m for m in mounts if m.startswith("./")]
    assert len(local) == 4
    for path in local:
        assert (PROJECT_ROOT / path).exists(), path
    config = yaml.safe_load((PROJECT_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert {"serving:8000", "streaming:8001"} <= targets


def test_every_dashboard_panel_reads_the_provisioned_data_source() -> None:
    grafana = PROJECT_ROOT / "deploy/grafana"
    sources = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    dashboard = json.loads((grafana / "dashboards/fraud-scoring.json").read_text())
    queries = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(queries) >= 20
    assert {t["datasource"]["uid"] for t in queries} <= uids
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
