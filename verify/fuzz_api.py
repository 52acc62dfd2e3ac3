"""`python -m verify.fuzz_api`: property-based fuzzing of the HTTP API against its own OpenAPI.

schemathesis reads /openapi.json from a real `python -m serving` process and, per operation,
generates requests that fit the schema (positive) and that break it (negative), with a
fixed seed. Every response must conform to the document (status code, content type, body
schema, headers), no response may be a server error other than the documented 503, and
every invalid request must be refused with a 4xx. Failures are collected, not raised, so
the table counts them all; the first few of each operation are printed with a curl line.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.cli import Parser, run_cli
from core.settings import PROJECT_ROOT, Settings, get_settings
from harness.models import champion_dir_or_exit
from harness.report import Check, table, write_json
from harness.servers import free_port, launched, serving_command

SEED = 20261128
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
DOCUMENTED_5XX = {503}  # the online store is unavailable: documented, with Retry-After


@dataclass
class Outcome:
    """What one operation did under one generation mode."""

    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    no_input: bool = False  # negative mode, and the operation takes nothing that can be broken

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500 and s not in DOCUMENTED_5XX)

    @property
    def answered(self) -> int:
        """Responses other than the documented 503: a server down for good answers none."""
        return self.examples - sum(self.statuses[s] for s in DOCUMENTED_5XX)


def fuzz_operation(
    operation: schemathesis.APIOperation, url: str, mode: GenerationMode, examples: int
) -> Outcome:
    """Send up to ``examples`` generated requests; collect every failed check."""
    outcome = Outcome()
    # Not positive_data_acceptance: near the int64 bound (2**63) the generator's float
    # arithmetic yields ids past it, which the API rightly refuses with 422.
    checks = [*CONFORMANCE, *([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])]

    @seed(SEED)
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,  # the same examples every run, whatever ran before
        derandomize=False,
        phases=[Phase.explicit, Phase.generate],  # collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: schemathesis.Case) -> None:
        outcome.examples += 1
        response = case.call(base_url=url, timeout=10)
        outcome.statuses[response.status_code] += 1
        problems = []
        if response.status_code >= 500 and response.status_code not in DOCUMENTED_5XX:
            problems.append(f"server error {response.status_code}: {response.text[:200]}")
        try:
            case.validate_response(response, checks=checks)
        except (Failure, FailureGroup) as exc:  # one error carrying every failed check
            problems.append(str(exc).strip())
        if problems:
            outcome.failures.append(
                "\n".join([*problems, f"reproduce: {case.as_curl_command(base_url=url)}"])
            )

    try:
        send()
    except Unsatisfiable:  # e.g. negative mode for an operation that takes no input
        if outcome.examples or mode is not GenerationMode.NEGATIVE:
            raise
        outcome.no_input = True
    return outcome


def fuzz(url: str, examples: int) -> dict[str, Outcome]:
    """Every operation in the live OpenAPI document, both generation modes."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    outcomes = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation the document does not describe validly
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            outcomes[f"{operation.label} ({mode.value})"] = fuzz_operation(
                operation, url, mode, examples
            )
    return outcomes


@contextmanager
def served(settings: Settings, workdir: Path) -> Iterator[str]:
    """`python -m serving` over the configured feature repo, model and Redis."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "FEATURE_REPO": str(settings.feature_repo),
        "MODEL_DIR": str(champion_dir_or_exit(settings)),
        "REDIS_CONNECTION_STRING": settings.redis_connection_string,
        "REDIS_TIMEOUT_MS": str(settings.redis_timeout_ms),
    }
    env.pop("API_KEY", None)  # the fuzzer explores the API itself, not the key check
    with launched(serving_command(port), f"{url}/ready", workdir / "serve.log", env, PROJECT_ROOT):
        yield url


def run(settings: Settings, examples: int = 200, details: list[str] | None = None) -> list[Check]:
    """Fuzz a fresh server; one row per operation and mode. Failures go to ``details``."""
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as tmp, served(settings, Path(tmp)) as url:
        outcomes = fuzz(url, examples)
    checks = [Check("all", "operations fuzzed", str(len(outcomes) // 2), len(outcomes) > 0)]
    for name, o in outcomes.items():
        if o.no_input:
            checks.append(Check(name, "examples", "none: no input to break", True))
            continue
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(o.statuses.items()))
        failed = len(o.failures)
        checks += [
            Check(name, "examples (status: count)", f"{o.examples} ({statuses})", o.examples > 0),
            Check(name, "answered other than 503", str(o.answered), o.answered > 0),
            Check(name, "server errors (5xx but 503)", str(o.server_errors), o.server_errors == 0),
            Check(name, "responses breaking the schema", str(failed), failed == 0),
        ]
        if details is not None:
            details += [f"{name}:\n{f}" for f in o.failures[:3]]
    return checks


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m verify.fuzz_api", description=__doc__)
    parser.add_argument(
        "--examples", type=int, default=1000, help="per operation and mode (default 1000)"
    )
    return parser


def _main(args: argparse.Namespace) -> int:
    details: list[str] = []
    checks = run(get_settings(), args.examples, details)
    print(table(checks))
    for text in details:
        print(f"\n{text}")
    extra = {"examples": args.examples, "seed": SEED, "schemathesis": schemathesis.__version__}
    print(f"written: {write_json('fuzz_api', checks, extra | {'failures': details})}")
    return 0 if all(c.ok for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
