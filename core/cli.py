"""Command-line plumbing shared by every entry point: one-line errors, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

OUR_PACKAGES = (
    "core",
    "datagen",
    "training",
    "devservices",
    "batch",
    "serving",
    "streaming",
    "registry",
)


class UserError(Exception):
    """A failure the user can fix; printed as one line, exit code 2."""


def package_version() -> str:
    """The installed distribution's version (``pyproject.toml``)."""
    try:
        return version("fraud-scoring")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr rather than the usage block;
    every command and subcommand has ``--version``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--version",
            action="version",
            version=f"%(prog)s {package_version()}",
            help="print the version and exit",
        )

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def setup_logging() -> None:
    """Libraries (Feast logs every registry refresh) at WARNING; our own modules at INFO."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    for ours in OUR_PACKAGES:
        logging.getLogger(ours).setLevel(logging.INFO)


def run_cli(
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv`` and run ``handler``, turning expected failures into one-line errors."""
    setup_logging()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    try:
        return handler(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"{parser.prog}: error: missing file: {exc.filename or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
