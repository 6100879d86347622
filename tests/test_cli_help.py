"""`maskrcnn COMMAND --help` is enough to use a command: a description, and for every option
what it does and its default."""

import argparse

import pytest

from maskrcnn.cli.main import build_parser, main

COMMANDS = sorted(build_parser().subcommand_parsers)


def help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text --help shows for `action`, defaults filled in, on one line."""
    formatter = parser._get_formatter()
    text = formatter._expand_help(action) if action.help else ""
    return " ".join(text.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_a_description_and_its_default(command):
    parser = build_parser().subcommand_parsers[command]
    assert parser.description and len(parser.description) > 40
    for action in parser._actions:
        if action.dest == "help":
            continue
        name = action.option_strings[0] if action.option_strings else action.metavar
        text = help_of(parser, action)
        assert len(text) > 10, f"{command} {name}: no description"
        assert "default: None" not in text and "default: False" not in text, f"{command} {name}: {text}"
        assert text.count("(default") <= 1, f"{command} {name} says its default twice: {text}"
        if not action.option_strings or action.required or action.nargs == 0:
            continue  # positionals and required options have no default; flags are off unless given
        if action.default is None:
            assert "default" in text or "no default" in text, f"{command} {name} does not say its default"
        else:
            assert f"(default: {action.default})" in text, f"{command} {name}: {text}"


def test_help_prints_and_exits_0(capsys):
    assert main(["eval", "--help"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: maskrcnn eval ")
    assert "--vis N" in printed and "(default: 0)" in printed
