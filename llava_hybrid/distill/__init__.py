"""Single-stage MaTVLM distillation (Eq. 7-11): losses, WSD schedule, flags and the trainer.

Light to import: the trainer (which needs llava.train) is imported only by `main`'s callers.
    from llava_hybrid.distill.losses import prob_distill_loss, layer_distill_loss, ce_loss, total_loss
    from llava_hybrid.distill.schedule import wsd_scheduler
    from llava_hybrid.distill.trainer import main, distill_losses
"""
from llava_hybrid.distill.losses import (DistillLosses, ce_loss, coverage_mask, layer_distill_loss,
                                         prob_distill_loss, total_loss)
from llava_hybrid.distill.schedule import wsd_lambda, wsd_scheduler

__all__ = ["DistillLosses", "ce_loss", "coverage_mask", "layer_distill_loss", "prob_distill_loss", "total_loss",
           "wsd_lambda", "wsd_scheduler"]
