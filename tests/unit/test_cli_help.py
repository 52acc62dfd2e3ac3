"""Every command-line tool the package installs: a help text on every flag, and --version."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

import pytest
from bytewax.run import _create_arg_parser

import batch.__main__
import datagen.__main__
import devservices.__main__
import registry.__main__
import serving.__main__
import streaming.__main__
import streaming.produce
import training.__main__
from core.cli import package_version

# fraud-stream forwards its flags to bytewax.run: its parser is bytewax.run's.
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "fraud-services": devservices.__main__._parser,
    "fraud-datagen": datagen.__main__.build_parser,
    "fraud-train": training.__main__.build_parser,
    "fraud-batch": batch.__main__.build_parser,
    "fraud-stream": _create_arg_parser,
    "fraud-produce": streaming.produce.build_parser,
    "fraud-serve": serving.__main__.build_parser,
    "fraud-models": registry.__main__.build_parser,
}


def installed_scripts() -> set[str]:
    return {e.name for e in entry_points(group="console_scripts") if e.name.startswith("fraud-")}


def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    """Every action of the parser and of its subcommands, named by where it is."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_installed_cli_is_walked() -> None:
    assert installed_scripts() == set(PARSERS)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_has_help(name: str) -> None:
    actions = list(walk(PARSERS[name](), name))
    assert len(actions) >= 2, "a parser with no flags at all"
    bare = [f"{where}: {a.option_strings or a.dest}" for where, a in actions if not a.help]
    assert bare == []


@pytest.mark.parametrize("name", sorted(set(PARSERS) - {"fraud-stream"}))
def test_version(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        PARSERS[name]().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"{name} {package_version()}"


def test_stream_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert streaming.__main__.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"fraud-stream {package_version()} (bytewax ")
