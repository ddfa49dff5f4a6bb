"""`cnnspec validate`: shape tables, JSON, exit codes, and located errors for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import GOOD, ROOT, SPECS, lines


def test_typo_suggests_the_key(cli, write):
    path = write(GOOD.replace("kernel_size: 3, padding: 1}\n  - relu\n  - {type: maxpool2d",
                              "kernal_size: 3, padding: 1}\n  - relu\n  - {type: maxpool2d", 1))
    res = cli("validate", path)
    assert res.code == 1
    (line,) = lines(res, path)
    assert line == f"{path}:4:38: error: layers[0] conv2d: unknown key 'kernal_size' (did you mean 'kernel_size'?)"


@pytest.mark.parametrize(
    "content, where, message",
    [
        (b"", (1, 1), "the file is empty"),
        (b"# only a comment\n", (1, 1), "the file is empty"),
        (b"input: [1, 2\nlayers: [relu]\n", (2, 7), "YAML syntax"),
        (b"input: [1, 2, 2]\nlayers: !!python/object/apply:os.system ['echo pwned']\n", (2, 9),
         "unsupported YAML tag"),
        (b"input: [1, 2, 2]\nlayers:\n  - !!python/name:os.system relu\n", (3, 5), "unsupported YAML tag"),
        (b"input: [1, 2, 2]\nlayers: [relu]\nname: caf\xe9\n", (3, 10), "not UTF-8"),
        (b"- just\n- a list\n", (1, 1), "a spec is a mapping"),
        (b"input: [1, 2, 2]\ninput: [1, 2, 2]\nlayers: [relu]\n", (2, 1), "duplicate key 'input'"),
        (b"layers: [relu]\n", (1, 1), "missing required key 'input'"),
        (b"input: [1, 2, 2]\nlayers: []\n", (2, 9), "layers: needs at least 1 item, got []"),
    ],
)
def test_bad_files_are_located(cli, write, content, where, message):
    path = write(content)
    res = cli("validate", path)
    assert res.code == 1
    got = lines(res, path)
    assert got and got[0].startswith(f"{path}:{where[0]}:{where[1]}: error: "), res.out
    assert message in got[0]


def test_alias_bomb_is_refused_quickly(cli, write):
    bomb = ["input: [1, 2, 2]", "a0: &a0 [relu, relu, relu, relu, relu, relu, relu, relu, relu, relu]"]
    for i in range(1, 9):
        bomb.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb.append("layers: *a8")
    path = write("\n".join(bomb) + "\n")
    import time

    t = time.perf_counter()
    res = cli("validate", path)
    assert time.perf_counter() - t < 5
    assert res.code == 1
    assert "more than 100000 nodes" in res.out


def test_unreadable_files_exit_2(cli, tmp_path):
    res = cli("validate", str(tmp_path / "missing.yaml"))
    assert res.code == 2 and "no such file" in res.err
    res = cli("validate", str(tmp_path))
    assert res.code == 2 and "is a directory" in res.err


def test_several_files_in_one_call(cli, write):
    good = write(GOOD, "good.yaml")
    bad = write("input: [1, 2, 2]\nlayers: [rellu]\n", "bad.yaml")
    res = cli("validate", good, bad)
    assert res.code == 1
    assert "total params: 50,186" in res.out and "unknown layer type 'rellu'" in res.out
    res = cli("validate", "--format", "json", good, bad)
    assert [s["valid"] for s in json.loads(res.out)["specs"]] == [True, False]


def test_usage_errors_exit_2(cli):
    assert cli().code == 2
    assert cli("validate").code == 2
    assert cli("frobnicate").code == 2
    assert cli("validate", "--format", "xml", "x.yaml").code == 2


def test_every_example_spec_validates(cli):
    assert SPECS
    res = cli("validate", *map(str, SPECS))
    assert res.code == 0, res.out


def test_validate_never_imports_torch(tmp_path):
    """Run validate with a torch that raises on import: it must still work."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch is poisoned')\n")
    # keep any inherited PYTHONPATH (plugins from a work tree) behind the poisoned torch
    path = os.pathsep.join([str(poison.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run(
        [sys.executable, "-m", "cnnspec", "validate", *map(str, SPECS)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr + res.stdout
    assert "total params" in res.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, cnnspec.cli; cnnspec.cli.main(['validate', sys.argv[1]]);"
         " print('torch' in sys.modules)", str(SPECS[0])],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert probe.stdout.strip().endswith("False"), probe.stdout + probe.stderr


def test_merge_keys_work_and_count_toward_the_limit(cli, write):
    path = write("input: [1, 8, 8]\nlayers:\n  - &c {type: conv2d, out_channels: 4, kernel_size: 3}\n"
                 "  - {<<: *c, out_channels: 8}\n")
    res = cli("validate", "--format", "json", path)
    assert res.code == 0, res.out
    assert json.loads(res.out)["specs"][0]["layers"][1]["output_shape"] == [8, 4, 4]
    bad = write("input: [1, 8, 8]\nlayers: [{<<: 5, type: relu}]\n", "bad.yaml")
    res = cli("validate", bad)
    assert res.code == 1 and "'<<' merges mappings only" in res.out
    bomb = ["input: [1, 8, 8]", "a0: &a0 {k0: 1, k1: 2}"]
    bomb += [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}]}}" for i in range(1, 21)]
    res = cli("validate", write("\n".join(bomb + ["layers: [{<<: *a20}]"]) + "\n", "bomb.yaml"))
    assert res.code == 1 and "more than 100000 nodes" in res.out and res.out.count("error:") == 1


def test_yaml_messages_help(cli, write):
    res = cli("validate", write("input: [1, 8, 8]\nlayers:\n\t- relu\n"))
    assert "YAML does not allow tabs for indentation" in res.out
    res = cli("validate", write("input: [1,8,8]\nlayers:\n  - {type: conv2d, out_channels: 2\n  - relu\n", "b.yaml"))
    assert "which started at line 3, column 5" in res.out


def test_the_program_skips_the_shutdown_garbage_collection_only_after_commands_that_print():
    # main(exiting=True) is what the `cnnspec` program runs; tests call main() in-process, untouched
    code = """
import gc, io, sys, contextlib
from cnnspec.cli import main
spec = sys.argv[1]
with contextlib.redirect_stdout(io.StringIO()):
    counts = [main(["graph", spec, "--format", "mermaid"], exiting=True), gc.get_freeze_count(),
              main(["validate", spec]), gc.get_freeze_count(),
              main(["validate", spec], exiting=True), gc.get_freeze_count() > 1000]
print(counts)
"""
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "mnist_cnn.yaml")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[0, 0, 0, 0, 0, True]"


@pytest.mark.parametrize(("before", "after"), [(None, "__all__"), ("", ""), ("logfire", "logfire")])
def test_the_program_turns_pydantic_plugins_off_unless_the_user_decided(before, after):
    code = ("import os, sys; from cnnspec.cli import entry; sys.argv = ['cnnspec', '--version']\n"
            "try:\n    entry()\nexcept SystemExit:\n    print(repr(os.environ.get('PYDANTIC_DISABLE_PLUGINS')))")
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if before is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = before
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines()[-1] == repr(after)
