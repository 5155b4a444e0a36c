"""Run by tests/test_convert_releases.py with the OTHER transformers lane's python: load each checkpoint
through load_pretrained_model, compare its fp32 logits with the ones the first lane computed, and count the
tower tensors that loaded equal to the checkpoint's file. Prints one JSON line; exit 1 on any difference.

    <other lane python> tests/cross_lane_load.py cases.json
"""
import json
import os
import sys

import torch


def main(spec_file: str) -> int:
    import transformers

    import llava_hybrid
    from llava_hybrid.checkpoint_files import load_state_dict
    from llava_hybrid.host.saving import hub_tower_names

    llava_hybrid.activate()
    from llava.model.builder import load_pretrained_model

    torch.set_num_threads(1)
    spec = json.load(open(spec_file))
    inputs = torch.load(spec["inputs"])
    results, ok = [], True
    for case in spec["cases"]:
        _, model, _, _ = load_pretrained_model(case["path"], None, os.path.basename(case["path"]), device="cpu")
        with torch.no_grad():
            logits = model(input_ids=inputs["input_ids"], images=inputs["images"]).logits
        want = torch.load(case["logits"])
        diff = (logits - want).abs().max().item() if logits.shape == want.shape else float("inf")
        in_file, _ = load_state_dict(os.path.join(case["path"], "vision_tower"), "tower")
        loaded = hub_tower_names(model.get_vision_tower().vision_tower.state_dict())
        equal = sum(1 for k, v in in_file.items() if k in loaded and torch.equal(loaded[k].to(v.dtype), v))
        results.append({"path": case["path"], "max_logit_diff": diff, "tower_tensors": equal,
                        "tower_tensors_in_file": len(in_file), "tower_tensors_in_model": len(loaded)})
        ok = ok and diff <= 1e-5 and equal == len(in_file) == len(loaded)
    print(json.dumps({"transformers": transformers.__version__, "cases": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
