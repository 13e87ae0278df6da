"""The `lima` command: every subcommand has a one-line help; bad model folders stop `serve` clearly."""

import subprocess

from studio.cli import build_parser
from lima.children import lima_command


def subcommands(parser, prefix=()):
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            help_line = next(a.help for a in action._choices_actions if a.dest == name)
            yield (*prefix, name), help_line, sub
            yield from subcommands(sub, (*prefix, name))


def test_every_subcommand_has_a_one_line_help():
    found = list(subcommands(build_parser()))
    assert {" ".join(path) for path, _, _ in found} >= {"serve", "models", "models prepare", "models list"}
    for path, help_line, _ in found:
        assert help_line and "\n" not in help_line, path


def lima(*args, **kw):
    return subprocess.run([*lima_command(), *args], capture_output=True, text=True, timeout=300, **kw)


def test_serve_refuses_a_missing_model_folder(tmp_path):
    result = lima("serve", "--no-registry", "--model", f"base={tmp_path / 'missing'}")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_serve_refuses_a_malformed_model_spec():
    result = lima("serve", "--model", "=x")
    assert result.returncode == 2
    assert "NAME=PATH_OR_ID" in result.stderr


def test_serve_with_no_base_and_nothing_else_says_there_is_nothing_to_serve():
    result = lima("serve", "--no-registry", "--base-model", "none")
    assert result.returncode == 2
    assert "nothing to serve" in result.stderr and "--model NAME=PATH" in result.stderr
