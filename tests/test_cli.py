"""The command line in process: parser shape, usage errors, --app loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from ron_kernel._config import CONFIG_FLAG, FIELDS
from ron_kernel.cli import build_parser, main
from ron_kernel.cli.run import load_app


@pytest.mark.parametrize("command", [["run"], ["config", "check"]], ids=" ".join)
def test_every_config_flag_is_accepted(command):
    argv = [*command, CONFIG_FLAG, "x.toml"]
    for fld in FIELDS.values():
        argv += [fld.flag, "v"]
    ns = build_parser().parse_args(argv)
    from ron_kernel.config import config_argv

    assert config_argv(ns) == [CONFIG_FLAG, "x.toml",
                               *(x for f in FIELDS.values() for x in (f.flag, "v"))]


def test_the_perf_rigs_are_not_a_command_of_the_installed_cli(capsys):
    # the rigs live in benchmarks/ at the repository root (`make perf`), not in the wheel
    with pytest.raises(SystemExit) as done:
        main(["perf", "bus-fanout"])
    assert done.value.code == 2
    assert "invalid choice: 'perf'" in capsys.readouterr().err


def test_usage_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--loop", "trio"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--loop" in err and "(see --help)" in err


def test_load_app_accepts_dotted_attributes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "dotted_app.py").write_text(
        "class App:\n    @staticmethod\n    def build(kernel):\n        return kernel\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = load_app("dotted_app:App.build")
    assert factory("k") == "k"
    with pytest.raises(ValueError, match=r"has no attribute 'App\.nope'"):
        load_app("dotted_app:App.nope")


def test_exit_statuses_are_defined_once_and_the_cli_uses_them():
    import ast

    import ron_kernel.cli
    from ron_kernel import _exitcodes

    assert (_exitcodes.EXIT_OK, _exitcodes.EXIT_FAILURE, _exitcodes.EXIT_USAGE,
            _exitcodes.EXIT_INTERRUPTED) == (0, 1, 2, 130)
    cli_dir = Path(ron_kernel.cli.__file__).parent
    files = sorted(cli_dir.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "run.py", "tail.py", "demo.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            # no second definition of an exit status ...
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                assert not [n for n in names if n.startswith("EXIT_")], f"{path.name}: {names}"
            # ... and no bare number returned as one
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
                assert type(node.value.value) is not int, \
                    f"{path.name}:{node.lineno}: return an EXIT_* constant, not a number"

