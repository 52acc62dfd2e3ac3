"""docker-compose.yml parses, has the expected services, and runs only real entry points."""

from __future__ import annotations

import importlib.util
import shlex
from importlib.metadata import distribution
from typing import Any

import yaml

from core.settings import PROJECT_ROOT

EXPECTED = {"redis", "kafka", "feast-init", "serving", "streaming", "batch"}
FEAST_COMMANDS = {"apply", "materialize", "materialize-incremental", "serve"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return loaded


def console_scripts() -> set[str]:
    return {ep.name for ep in distribution("fraud-scoring").entry_points}


def steps(command: list[str] | str) -> list[list[str]]:
    """Each program invocation in a command, splitting `sh -c "a && b"` into its parts."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


def is_entry_point(argv: list[str]) -> bool:
    if argv[0] == "cd":
        return (PROJECT_ROOT / argv[1]).is_dir() or argv[1] == ".."
    if argv[0] == "feast":
        return argv[1] in FEAST_COMMANDS
    if argv[0] == "python" and argv[1] == "-m":
        module = argv[3] if argv[2] == "bytewax.run" else argv[2]
        module = module.split(":")[0]
        spec = importlib.util.find_spec(module.split(".")[0])
        return spec is not None and importlib.util.find_spec(module) is not None
    return argv[0] in console_scripts()


def test_parses_with_the_expected_services() -> None:
    assert set(compose()["services"]) >= EXPECTED


def test_every_command_is_a_real_entry_point() -> None:
    for name, service in compose()["services"].items():
        if "command" not in service or name in {"redis", "kafka"}:
            continue
        for argv in steps(service["command"]):
            assert is_entry_point(argv), f"{name}: {argv}"


def test_healthchecks_gate_dependents() -> None:
    """Long-running services gate on healthchecks; one-shot ones on having completed."""
    services = compose()["services"]
    for name in ("redis", "kafka", "serving"):
        assert "healthcheck" in services[name], name
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            if "healthcheck" in services[dep]:
                assert cond == {"condition": "service_healthy"}, (name, dep)
            else:
                assert cond == {"condition": "service_completed_successfully"}, (name, dep)


def test_config_comes_from_the_environment() -> None:
    env = compose()["services"]["feast-init"]["environment"]
    assert env["REDIS_CONNECTION_STRING"].startswith("${REDIS_CONNECTION_STRING")
    assert env["KAFKA_BOOTSTRAP_SERVERS"].startswith("${KAFKA_BOOTSTRAP_SERVERS")
