"""The documentation's code runs: every Python block of docs/plugins.md and the READMEs is executed
(the blocks of one file in order, sharing names), TOML and YAML blocks parse, the README's params
fragment validates against the params schema, and every `fclab` command in a shell block exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, default_params, run_cli

DOCS = [ROOT / "README.md", ROOT / "docs" / "plugins.md", *sorted((ROOT / "examples").glob("*/README.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, *languages: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang in languages]


def test_the_docs_have_code_to_test():
    assert len(blocks(ROOT / "docs" / "plugins.md", "python")) >= 5
    assert blocks(ROOT / "README.md", "python")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"doc_{path.stem}"}
    for i, code in enumerate(blocks(path, "python")):
        try:
            exec(compile(code, f"{path.name}[python block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{path.name}, python block {i} fails: {type(exc).__name__}: {exc}") from exc


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_toml_and_yaml_blocks_parse(path):
    for code in blocks(path, "toml"):
        tomllib.loads(code)
    for code in blocks(path, "yaml"):
        assert isinstance(yaml.safe_load(code), dict)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def test_readme_params_fragment_is_valid_params(tmp_path):
    from fclab.framework.params import load_params

    for code in blocks(ROOT / "README.md", "yaml"):
        merged = _merge(default_params(), yaml.safe_load(code))
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(merged, sort_keys=False))
        load_params(path)  # a params error (unknown key, wrong type) raises


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shell_commands_exist(path):
    for code in blocks(path, "sh", "bash"):
        for line in code.splitlines():
            words = line.split("#")[0].split()
            if not words or words[0] != "fclab":
                continue
            command = [w for w in words[1:] if not w.startswith("-")][:1]
            code_, _, err = run_cli(*command, "--help")
            assert code_ == 0, f"{path.name}: `{line.strip()}`: {err}"


def test_params_reference_matches_the_schema():
    """docs/params.md is what `fclab params-doc` prints now (regenerate it when the schema changes),
    and every key of every section has a meaning in it."""
    from fclab.framework.params.docs import params_markdown

    page = (ROOT / "docs/params.md").read_text()
    assert page == params_markdown(), "docs/params.md is stale: run `fclab params-doc > docs/params.md`"
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) > 80
    undocumented = [r.split("|")[1].strip() for r in rows if not r.rstrip(" |").split("|")[-1].strip()]
    assert undocumented == []
    for key in ("`events_root`", "`session`", "`res`", "`subject_pages`", "`family`", "`strategy_options`"):
        assert any(r.startswith(f"| {key} |") for r in rows), key
    code, out, _ = run_cli("params-doc")
    assert code == 0 and out == page
