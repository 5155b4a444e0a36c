"""The package's layout contracts: the model core knows nothing of LLaVA, imports do no work, no import circles.

Read from the source (every module's import statements) and checked in fresh interpreters with the
startup hook off, so what a test file imported before cannot hide a violation.
"""
import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import llava_hybrid

PACKAGE_DIR = Path(llava_hybrid.__file__).parent
CORE = ("llava_hybrid.hybrid", "llava_hybrid.mamba2")  # plain PyTorch + transformers


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict:
    """Module name -> source path, for every .py file of the installed package."""
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imports(path: Path, module: str, modules: dict, module_level_only: bool):
    """Names of modules `module` imports: at module level (incl. class bodies, if/try), or anywhere."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = set()

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inside_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inside_function and module_level_only:
                continue
            if isinstance(child, ast.Import):
                out.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                source = resolve(child)
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    out.add(sub if sub in modules else source)
            visit(child, top and not inside_function)

    visit(ast.parse(path.read_text()), True)
    return out


def import_graph(module_level_only: bool = True) -> dict:
    modules = package_modules()
    return {name: _imports(path, name, modules, module_level_only) for name, path in modules.items()}


def _fresh(code: str):
    env = dict(os.environ, LLAVA_HYBRID_DISABLE="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_no_import_circle_among_the_package_modules():
    graph = import_graph()
    inner = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    # a module's import of its own package's __init__ (running while that package loads) is no circle
    inner = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in inner.items()}
    circles, state = [], {}

    def walk(node, stack):
        state[node] = "open"
        for dep in sorted(inner[node]):
            if state.get(dep) == "open":
                circles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                walk(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(inner):
        if name not in state:
            walk(name, [name])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_model_core_imports_neither_llava_nor_the_host():
    offenders = []
    for module, deps in import_graph(module_level_only=False).items():
        if not module.startswith(CORE):
            continue
        for dep in deps:
            if dep == "llava" or dep.startswith(("llava.", "llava_hybrid.host", "llava_hybrid.distill",
                                                 "llava_hybrid.easyvqa", "llava_hybrid.bench")):
                offenders.append(f"{module} imports {dep}")
    assert not offenders, offenders


def test_hybrid_and_mamba2_load_no_llava_module_even_when_building_a_student():
    proc = _fresh("""
        import sys
        import llava_hybrid.hybrid, llava_hybrid.mamba2
        from transformers import PhiConfig, PhiForCausalLM
        from llava_hybrid.hybrid.init import build_student

        teacher = PhiForCausalLM(PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, max_position_embeddings=32))
        student = build_student(teacher, [1])
        print(type(student).__name__, sorted(m for m in sys.modules if m == "llava" or m.startswith("llava.")))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[0] == "HybridPhiForCausalLM"
    assert proc.stdout.strip().endswith("[]"), proc.stdout


# The lmms-eval model is imported by lmms-eval itself, which setup.sh installs on lane 5 only (its wheel
# needs transformers >= 4.39.2): on lane 4 there is nothing to import it from.
_UNIMPORTABLE_HERE = {"llava_hybrid.evaluation.lmms"} if importlib.util.find_spec("lmms_eval") is None else set()


def test_importing_every_module_patches_nothing_until_activate():
    proc = _fresh("""
        import importlib, json, sys
        names = %r
        for name in names:
            importlib.import_module(name)
        from llava_hybrid import _patching, activation, patches
        import llava.conversation, llava.model.builder
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        ours = ("llava_phi", "tiny_llava_phi", "hybrid_phi", "hybrid_llama", "llava_hybrid_phi", "llava_hybrid_llama")
        before = {"replaced": sorted(map(str, _patching.patched_sites())), "patches": patches.status(),
                  "waiting": _patching.pending_hooks(), "active": activation.is_active(),
                  "phi template": "phi" in llava.conversation.conv_templates,
                  "auto configs": [t for t in ours if t in CONFIG_MAPPING],
                  "loader": llava.model.builder.load_pretrained_model.__module__}
        import llava_hybrid
        llava_hybrid.activate()
        after = {"replaced": len(_patching.patched_sites()), "phi template": "phi" in llava.conversation.conv_templates,
                 "loader": llava.model.builder.load_pretrained_model.__module__}
        print(json.dumps({"before": before, "after": after}))
    """ % sorted(m for m in package_modules() if not m.endswith("__main__") and m not in _UNIMPORTABLE_HERE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["before"] == {"replaced": [], "patches": {}, "waiting": {}, "active": False, "phi template": False,
                              "auto configs": [], "loader": "llava.model.builder"}, seen["before"]
    # the same process does see every registration once activate() runs (the check can fail)
    assert seen["after"]["replaced"] > 0 and seen["after"]["phi template"]
    assert seen["after"]["loader"] == "llava_hybrid.host.builder"


def test_the_transformers_version_is_read_in_compat_only():
    readers = []
    for name, path in package_modules().items():
        if name == "llava_hybrid.compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "__version__" and \
                    isinstance(node.value, ast.Name) and node.value.id == "transformers":
                readers.append(f"{name}: transformers.__version__")
            if isinstance(node, ast.Attribute) and node.attr == "metadata" and \
                    isinstance(node.value, ast.Name) and node.value.id == "importlib":
                readers.append(f"{name}: importlib.metadata")
    assert not readers, readers
