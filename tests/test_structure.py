"""The code's shape: steps, variants and families each declared once; no import cycle; docs from the declarations."""

from __future__ import annotations

import ast
import re

from conftest import INCLUDE, ROOT
from nemo2sherpa.modelspec import FAMILIES, TRANSDUCER_CLASSES, family_of
from nemo2sherpa.pipeline import STEPS
from nemo2sherpa.variants import VARIANTS

PACKAGE = INCLUDE / "nemo2sherpa"


def imports_of(path) -> set[str]:
    """The package modules a module imports, at the top or inside functions."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("nemo2sherpa")):
            module = node.module or ""
            parts = module.split(".")[1:] if module.startswith("nemo2sherpa") else module.split(".")
            deps |= {parts[0]} if parts and parts[0] else {a.name for a in node.names}
    return {d for d in deps if (PACKAGE / f"{d}.py").exists() and d != path.stem}


def test_the_package_has_no_import_cycle():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    assert graph["pipeline"] and graph["cli"]  # the parser sees imports
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        assert m not in path, "import cycle: " + " -> ".join(path[path.index(m):] + [m])
        if m not in done:
            for d in sorted(graph[m]):
                visit(d, path + [m])
            done.add(m)

    for m in sorted(graph):
        visit(m, [])


def variant_words(source: str) -> list[str]:
    """String constants in code (not docstrings) that are a variant's name or hold one of its file names."""
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    files = re.compile(r"\.(%s)\.(onnx|weights)\b" % "|".join(v.suffix.lstrip(".") for v in VARIANTS.values()
                                                            if v.suffix))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs and (n.value in VARIANTS or files.search(n.value))]


def test_variants_are_named_only_in_their_registry():
    sources = [*PACKAGE.glob("*.py"), *(ROOT / "dags").glob("*.py"), *(ROOT / "plugins").glob("*.py")]
    found = {p.name: variant_words(p.read_text()) for p in sources if p.name != "variants.py"}
    assert {k: v for k, v in found.items() if v} == {}
    # It can see them: a name, a file name in an f-string, not a docstring.
    assert variant_words('"""int8."""\nx = ["int8", f"{m}.fp16.onnx"]') == ["int8", ".fp16.onnx"]


def test_the_readme_table_is_the_step_table():
    text = (ROOT / "README.md").read_text()
    section = text.split("## What the DAG does", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    table = [(task.strip().strip("`"), venv.strip()) for task, venv in rows]
    first, *rest = STEPS
    assert table == [("plan", "Airflow"), (first.name, first.venv), ("unpublished", "Airflow"),
                     *((s.name, s.venv) for s in rest), ("publish", "Airflow")]


def test_every_step_command_is_made_from_the_steps_declaration(tmp_path):
    """`python -m nemo2sherpa <step>` has no adapter of its own: its flags are its arguments' fields, and what they
    give is the step's arguments (pipeline.Step.inputs), which its one call (Step.run) takes, as the DAG and convert
    give it over a plan (Step.args)."""
    import dataclasses
    import json

    from nemo2sherpa.cli import COMMANDS, parser, step_command, step_flags
    from nemo2sherpa.records import Source

    source_json = tmp_path / "source.json"
    source_json.write_text(json.dumps(Source(kind="local", name="m", revision="r").to_json()))
    commands = {s.command or s.name: s for s in STEPS if s.command is not None}
    assert set(commands) <= set(COMMANDS) and len(commands) == len(STEPS) - 1  # validate_export: validate --mode pre
    for name, step in commands.items():
        flags = step_flags(step.inputs)
        assert COMMANDS[name].flags == flags and COMMANDS[name].help == step.what, name
        names = {flag for flag, _ in flags}
        for f in dataclasses.fields(step.inputs):
            dashed = f.name.replace("_", "-")
            assert {f"--{dashed}", f"--{dashed}-json", f"--no-{dashed}"} & names or f.name == "gates", (name, f.name)
        argv = [name, *(x for flag, opts in flags if opts.get("required")
                        for x in (flag, str(source_json) if flag.endswith("-json") else "x"))]
        captured = []
        step_command(dataclasses.replace(step, run=captured.append)).run(parser().parse_args(argv))
        assert len(captured) == 1 and isinstance(captured[0], step.inputs), name


def test_every_family_has_its_rules_in_one_place():
    seen = {family_of(cls, durations).name for cls in TRANSDUCER_CLASSES for durations in ((), (0, 1, 2, 3, 4))}
    assert seen == set(FAMILIES)
    tdt, rnnt = FAMILIES["hybrid-tdt-ctc"], FAMILIES["rnnt"]
    assert tdt.joiner_output_dim(1024, (0, 1, 2, 3, 4)) == 1030 and rnnt.joiner_output_dim(1024, ()) == 1025
    assert tdt.ctc_branch and not rnnt.ctc_branch
    # No module outside modelspec decides a family by itself.
    for p in PACKAGE.glob("*.py"):
        if p.name != "modelspec.py":
            assert '"Hybrid"' not in p.read_text() and "len(spec.durations)" not in p.read_text(), p.name


def test_every_public_function_has_a_docstring_and_fits_on_a_screen():
    missing, long = [], []
    for p in [*PACKAGE.glob("*.py"), *(ROOT / "dags").glob("*.py"), *(ROOT / "plugins").glob("*.py")]:
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{p.name}:{node.lineno} {node.name}")
        for node in tree.body:
            for item in [node, *(node.body if isinstance(node, ast.ClassDef) else [])]:
                if (isinstance(item, (ast.FunctionDef, ast.ClassDef)) and not item.name.startswith("_")
                        and ast.get_docstring(item) is None):
                    missing.append(f"{p.name}:{item.lineno} {item.name}")
    assert missing == [] and long == [], (missing, long)
