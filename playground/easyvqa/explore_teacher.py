"""Teacher-recipe exploration: a direct training loop over the same model classes as the shipped
teacher (transformers SiglipVisionModel -> mlp2x_gelu -> PhiForCausalLM, phi template, task
tokenizer), used to pick the config and schedule before running it through the SFT entry.

    python playground/easyvqa/explore_teacher.py --steps 1500 --patch 8 --vision-lr 3e-3 --augment

Prints steps, seconds and test accuracy (argmax over the answer token, fixed 1000-question subset).
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from llava_hybrid.easyvqa.data import AUGMENTATIONS, _augmented, fixed_subset, group_by_image, load_split
from llava_hybrid.easyvqa.tokenizer import build_easyvqa_tokenizer, template_texts


class TinyLlava(nn.Module):
    """image (B,3,S,S) -> SigLIP hidden_states[select] (B,N,Dv) -> mlp2x_gelu (B,N,D) -> Phi."""

    def __init__(self, a, vocab):
        super().__init__()
        from transformers import PhiConfig, PhiForCausalLM, SiglipVisionConfig, SiglipVisionModel
        vcfg = SiglipVisionConfig(hidden_size=a.vhidden, intermediate_size=4 * a.vhidden, num_hidden_layers=a.vlayers,
                                  num_attention_heads=a.vhidden // 32, image_size=a.image_size, patch_size=a.patch)
        self.vision = SiglipVisionModel(vcfg)
        self.proj = nn.Sequential(nn.Linear(a.vhidden, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.hidden))
        lcfg = PhiConfig(vocab_size=vocab, hidden_size=a.hidden, intermediate_size=4 * a.hidden,
                         num_hidden_layers=a.layers, num_attention_heads=a.hidden // 32, max_position_embeddings=512,
                         resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0)
        self.lm = PhiForCausalLM(lcfg)
        self.select = a.select

    def forward(self, images, pre, post):
        """pre: (B,Lp) ids before the image; post: (B,Lq) ids after it. Returns logits over post (B,Lq,V)."""
        feats = self.vision(pixel_values=images, output_hidden_states=True).hidden_states[self.select]  # (B,N,Dv)
        emb = self.lm.get_input_embeddings()
        x = torch.cat([emb(pre), self.proj(feats), emb(post)], dim=1)  # (B, Lp+N+Lq, D)
        logits = self.lm(inputs_embeds=x).logits
        return logits[:, -post.shape[1]:]


def load_images(paths, ids, size, views):
    out = {}
    for i in ids:
        im = Image.open(paths[i]).convert("RGB")
        for v in views:
            img = _augmented(im, v) if v else im
            img = img.resize((size, size), Image.BICUBIC) if size != 64 else img
            arr = (np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5  # SigLIP mean/std 0.5
            out[(i, v)] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def encode_conv(tok, qs, turns):
    """phi template, multi-turn: post-image ids and label mask (answers + their eos)."""
    ids, lab = [], []
    for k, q in enumerate(qs[:turns]):
        head = ("\n" if k == 0 else "USER: ") + f"{q.text} ASSISTANT:"
        h = tok(head).input_ids
        ans = tok(" " + q.answer).input_ids + [tok.eos_token_id]
        ids += h + ans
        lab += [-100] * len(h) + ans
    return ids, lab


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vision-lr", type=float, default=None)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--vhidden", type=int, default=128)
    p.add_argument("--vlayers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--select", type=int, default=-1)
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--augment", type=int, default=0)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--max-seconds", type=float, default=900)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = build_easyvqa_tokenizer(None)
    train_q, train_paths = load_split("train")
    test_q, test_paths = load_split("test")
    groups = group_by_image(train_q)
    views = ("",) + AUGMENTATIONS[:a.augment]
    train_imgs = load_images(train_paths, list(groups), a.image_size, views)
    test_sub = fixed_subset([{"q": q} for q in test_q], 1000)
    test_imgs = load_images(test_paths, sorted({r["q"].image_id for r in test_sub}), a.image_size, ("",))
    pre = torch.tensor([tok(template_texts()[0] + " USER: ").input_ids])
    model = TinyLlava(a, len(tok))
    vis = [p_ for n, p_ in model.named_parameters() if n.startswith("vision.")]
    rest = [p_ for n, p_ in model.named_parameters() if not n.startswith("vision.")]
    opt = torch.optim.AdamW([{"params": rest, "lr": a.lr}, {"params": vis, "lr": a.vision_lr or a.lr}],
                            weight_decay=0.0)
    base = [g["lr"] for g in opt.param_groups]
    nparams = sum(p_.numel() for p_ in model.parameters())
    keys = list(train_imgs)
    rng = np.random.RandomState(0)

    def evaluate():
        model.eval()
        hit = {"yes/no": [], "shape": [], "color": []}
        with torch.no_grad():
            for s in range(0, len(test_sub), 100):
                rows = [r["q"] for r in test_sub[s:s + 100]]
                posts = [tok("\n" + q.text + " ASSISTANT:").input_ids for q in rows]
                L = max(map(len, posts))
                post = torch.tensor([x + [tok.eos_token_id] * (L - len(x)) for x in posts])  # right-padded
                imgs = torch.stack([test_imgs[(q.image_id, "")] for q in rows])
                last = torch.tensor([len(x) - 1 for x in posts])
                logits = model(imgs, pre.expand(len(rows), -1), post)[torch.arange(len(rows)), last]
                pred = tok.batch_decode(logits.argmax(-1)[:, None])
                for q, pr in zip(rows, pred):
                    hit[q.qtype].append(pr.strip() == q.answer)
        model.train()
        allh = sum(hit.values(), [])
        return sum(allh) / len(allh), {k: round(sum(v) / max(1, len(v)), 3) for k, v in hit.items()}

    t0 = time.time()
    log = []
    for step in range(1, a.steps + 1):
        lr_scale = min(1.0, step / 50) * (0.5 * (1 + math.cos(math.pi * step / a.steps)) * 0.9 + 0.1)
        for g, b in zip(opt.param_groups, base):
            g["lr"] = b * lr_scale
        batch = [keys[j] for j in rng.randint(0, len(keys), a.batch)]
        encs = []
        for (i, v) in batch:
            qs = [groups[i][j] for j in rng.permutation(len(groups[i]))]
            encs.append(encode_conv(tok, qs, a.turns))
        L = max(len(e[0]) for e in encs)
        post = torch.tensor([e[0] + [tok.eos_token_id] * (L - len(e[0])) for e in encs])
        labels = torch.tensor([e[1] + [-100] * (L - len(e[1])) for e in encs])
        imgs = torch.stack([train_imgs[k] for k in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            logits = model(imgs, pre.expand(len(batch), -1), post)
        loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                           labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % a.eval_every == 0 or step == a.steps or time.time() - t0 > a.max_seconds:
            acc, per = evaluate()
            row = {"step": step, "s": round(time.time() - t0), "loss": round(loss.item(), 3), "acc": round(acc, 3), **per}
            log.append(row)
            print(json.dumps(row), flush=True)
            if time.time() - t0 > a.max_seconds:
                break
    print(json.dumps({"args": vars(a), "params": nparams, "final": log[-1]}), flush=True)


if __name__ == "__main__":
    main()
