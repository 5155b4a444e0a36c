"""activate(), the post-import hook machinery, the startup .pth and the run wrapper."""
import os
import subprocess
import sys
import textwrap

import pytest

from llava_hybrid import _patching, startup


def _py(code, disable=False, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "LLAVA_HYBRID_DISABLE"}
    if disable:
        env["LLAVA_HYBRID_DISABLE"] = "1"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_package_import_and_startup_hook_stay_light():
    # the startup .pth runs in every process of this interpreter: it must not pull in torch
    code = """
        import sys, llava_hybrid
        print(sorted(m for m in ("torch", "transformers", "llava") if m in sys.modules))
        print("llava_hybrid.startup" in sys.modules)
    """
    on, off = _py(code), _py(code, disable=True)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout.split("\n")[:2] == ["[]", str(startup.pth_path().exists())]
    assert off.stdout.split("\n")[:2] == ["[]", "False"]


def test_activate_is_idempotent_and_rebinds_names_bound_before_it():
    code = """
        from llava.model.builder import load_pretrained_model as early   # bound before activation
        kept = [early]   # a reference outside any module namespace keeps LLaVA's function
        import llava_hybrid, llava.model.builder as b
        first = llava_hybrid.activate()
        assert llava_hybrid.activate() is first
        assert kept[0] is not b.load_pretrained_model and early is b.load_pretrained_model
        assert b.load_pretrained_model.__module__ == "llava_hybrid.host.builder"
        print(first["registered"], first["rebound"] >= 1)
    """
    proc = _py(code, disable=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['llava_hybrid.host', 'llava_hybrid.hybrid'] True"


@pytest.mark.skipif(not startup.pth_path().exists(), reason="startup .pth not installed")
def test_startup_hook_activates_before_the_importer_binds_names():
    code = """
        from llava.conversation import conv_templates
        from llava.model.builder import load_pretrained_model
        import torch
        print(load_pretrained_model.__module__, "phi" in conv_templates, flush=True)
        print(torch.zeros(1).cuda().device)
    """
    on, off = _py(code), _py(code, disable=True)
    assert on.returncode == 0, on.stderr[-3000:]
    assert on.stdout.split()[:3] == ["llava_hybrid.host.builder", "True", "cpu"]
    assert "no CUDA device" in on.stderr
    # switched off: LLaVA's own loader and templates, and .cuda() fails on this CPU-only machine
    assert off.stdout.split()[:2] == ["llava.model.builder", "False"]
    assert off.returncode != 0 and "llava_hybrid" not in off.stderr


def test_pth_install_and_uninstall(tmp_path):
    path = startup.install(str(tmp_path))
    assert path == tmp_path / startup.PTH_NAME and path.read_text() == startup.PTH_LINE
    assert path.read_text().startswith("import ") and path.read_text().count("\n") == 1
    assert startup.uninstall(str(tmp_path)) and not path.exists()
    assert not startup.uninstall(str(tmp_path))


def test_when_imported_runs_after_exec_and_before_the_importer_binds(tmp_path, monkeypatch):
    (tmp_path / "lhx_target.py").write_text("VALUE = 'original'\n")
    (tmp_path / "lhx_user.py").write_text("from lhx_target import VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []

    def hook(module):
        seen.append(module.VALUE)  # the body has run
        _patching.replace_attr(module, "VALUE", "patched")

    _patching.when_imported("lhx_target", hook)
    assert _patching.pending_hooks().get("lhx_target") == 1
    import lhx_user

    assert seen == ["original"] and lhx_user.VALUE == "patched"
    assert "lhx_target" not in _patching.pending_hooks()
    again = []
    _patching.when_imported("lhx_target", lambda m: again.append(m.VALUE))  # already imported: now
    assert again == ["patched"]
    for name in ("lhx_target", "lhx_user"):
        sys.modules.pop(name, None)


def test_replace_attr_on_a_class_is_idempotent_and_recorded():
    class Host:
        def method(self):
            return "upstream"

    original = Host.__dict__["method"]
    first = _patching.replace_attr(Host, "method", lambda self: "ours")
    assert first is original and Host().method() == "ours"
    assert _patching.is_replaced(Host, "method")
    replacement = Host.__dict__["method"]
    assert _patching.replace_attr(Host, "method", replacement) is original
    assert _patching.original_of(replacement) is original


def test_run_wrapper_lists_patches():
    proc = subprocess.run([sys.executable, "-m", "llava_hybrid.run", "--list-patches"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, LLAVA_HYBRID_DISABLE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import llava_hybrid.patches as patches

    for row in patches.describe():
        if row["needed"] == "True":
            assert f"{row['name']:<24} needed=True  applied" in proc.stdout
    assert "llava.model.builder.load_pretrained_model" in proc.stdout
