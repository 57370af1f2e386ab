"""The README's commands are the ones CI runs, and its claims match the code."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        return handle.read()


def test_ci_runs_the_readme_commands():
    readme_commands = re.findall(r"```bash\n(.+?)\n```", read("README.md"), flags=re.S)[:2]
    ci_lines = [line for line in read(".ci/run").splitlines() if line and not line.startswith(("#", "set ", "cd ", "rm "))]
    assert ci_lines == readme_commands


def test_readme_lists_every_command():
    from uadcore.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    readme = read("README.md")
    for name in commands:
        assert f"uad {name}" in readme or f"`{name}`" in readme, name
