"""Real English text that ships offline: *Botchan* (Natsume Soseki, tr. Morri; public domain, Project
Gutenberg eBook #8868), the test corpus inside sentencepiece's source package (`test/botchan.txt`).

`fetch_botchan(dir)` takes it from the sdist (`pip download --no-deps --no-binary :all:
sentencepiece==0.2.1`; 0.2.3's sdist no longer ships it) once. `token_splits` cuts the tokenised novel
(Gutenberg header and footer dropped) into fixed-length sequences: the last `heldout_tokens` for held-out
perplexity, everything before them for training, never overlapping.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict

import torch

SDIST = "sentencepiece==0.2.1"
MEMBER = "test/botchan.txt"
FILE = "botchan.txt"
START, END = "*** START OF THIS PROJECT GUTENBERG EBOOK", "*** END OF THIS PROJECT GUTENBERG EBOOK"


def fetch_botchan(data_dir: str) -> str:
    """<data_dir>/botchan.txt, extracted from sentencepiece's sdist when not there yet; returns the path."""
    path = os.path.join(data_dir, FILE)
    if os.path.isfile(path):
        return path
    os.makedirs(data_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = [f for f in os.listdir(tmp) if f.endswith(".tar.gz")]
        if proc.returncode != 0 or not archives:
            raise RuntimeError(f"could not fetch {SDIST}'s source package for {FILE} ({' '.join(cmd)}):\n"
                               f"{proc.stderr[-2000:]}\nPut a copy of {FILE} at {path} instead.")
        with tarfile.open(os.path.join(tmp, archives[0])) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(MEMBER)), None)
            if member is None:
                raise RuntimeError(f"{archives[0]} has no {MEMBER}")
            data = tar.extractfile(member).read()
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return path


def novel_text(path: str) -> str:
    """The novel's body: the Gutenberg licence header and footer removed."""
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0:
        raise ValueError(f"{path}: no Project Gutenberg start/end markers; is this botchan.txt?")
    body = text[text.index("\n", start) + 1:end]
    return body.strip() + "\n"


def token_splits(tokenizer, text: str, seq_len: int = 256, heldout_tokens: int = 20480,
                 max_train_tokens: int | None = None) -> Dict[str, torch.Tensor]:
    """{"train": (N, seq_len), "heldout": (M, seq_len)} token ids; held-out = the text's last tokens.

    max_train_tokens keeps only the first that many training tokens (CI).
    """
    ids = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False).input_ids, dtype=torch.long)  # (T,)
    n_held = heldout_tokens // seq_len
    if n_held < 1 or ids.numel() < (n_held + 1) * seq_len:
        raise ValueError(f"token_splits: {ids.numel()} tokens cannot give {heldout_tokens} held-out tokens plus "
                         f"training sequences of {seq_len}")
    held = ids[-n_held * seq_len:].view(n_held, seq_len)  # (M, L)
    train = ids[:-n_held * seq_len]
    if max_train_tokens is not None:
        train = train[:max_train_tokens]
    n_train = train.numel() // seq_len
    if n_train < 1:
        raise ValueError(f"token_splits: fewer than {seq_len} training tokens")
    return {"train": train[:n_train * seq_len].view(n_train, seq_len), "heldout": held}
