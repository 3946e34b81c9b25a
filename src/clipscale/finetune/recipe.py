"""The paper's fine-tuning recipe (Table 10), made of timm's parts: layer-wise learning-rate decay
(timm's ``param_groups_layer_decay`` through ``create_optimizer_v2``, with a ``group_matcher``
for open_clip's vision transformer), EMA of weights (``ModelEmaV3`` with Table 10's decay from the first step), label smoothing
(``LabelSmoothingCrossEntropy``), stochastic depth (timm's ``DropPath`` on each residual branch),
RandAugment and random erasing (``create_transform``), gradient clipping (``dispatch_clip_grad``),
warmup and cosine decay (``CosineLRScheduler``, per update step).

The classifier is the checkpoint's image encoder, its features normalized, times the CLIP logit
scale, into a linear head per task initialised from the zero-shot classifier (clip_benchmark's
``zero_shot_classifier`` of the task's class names and templates): trained in ImageNet-style
fine-tuning, fixed in joint fine-tuning (the paper's and Ilharco et al.'s patching protocol).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from clipscale.finetune.plan import Recipe


def _resblocks(visual: nn.Module) -> list[nn.Module]:
    try:
        return list(visual.transformer.resblocks)
    except AttributeError:
        raise TypeError(f"fine-tuning needs an open_clip VisionTransformer (visual.transformer.resblocks); "
                        f"this model's image encoder is a {type(visual).__name__}") from None


def _drop_branch(module: nn.Module, args, out):
    return module.drop_path(out)


def add_stochastic_depth(visual: nn.Module, rate: float) -> list[float]:
    """Stochastic depth on the residual branches of each block, the rate rising linearly from 0 at
    the first block to ``rate`` at the last (timm's rule): timm's ``DropPath`` applied to each
    branch's output (after its layer scale) by a forward hook, so that the state dict keeps
    open_clip's keys (DropPath has no parameters) and a deep copy (the EMA) drops its own paths.
    Returns the rates."""
    from timm.layers import DropPath

    blocks = _resblocks(visual)
    rates = [rate * i / max(1, len(blocks) - 1) for i in range(len(blocks))]
    for block, r in zip(blocks, rates):
        if r <= 0:
            continue
        for branch in (block.ls_1, block.ls_2):
            branch.drop_path = DropPath(r)
            branch.register_forward_hook(_drop_branch)
    return rates


class Classifier(nn.Module):
    """The image encoder of a CLIP model and one linear head per task on its normalized features
    (scaled by the model's logit scale): ``forward(images, task)`` gives the task's logits.

    ``group_matcher`` and ``no_weight_decay`` tell timm's layer-decay parameter groups what a
    layer is: the stem (patch embedding, class and position embeddings, ln_pre) is layer 0, block
    i is layer i + 1, the final norm and projection go with the last block (as timm groups its
    ViT's final norm), the heads are the top layer (scale 1)."""

    def __init__(self, visual: nn.Module, heads: Mapping[str, torch.Tensor], logit_scale: float,
                 train_heads: bool = True):
        super().__init__()
        self.visual = visual
        self.heads = nn.ParameterDict({
            task: nn.Parameter(w.detach().clone().float(), requires_grad=train_heads) for task, w in heads.items()})
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(images), dim=-1)

    def forward(self, images: torch.Tensor, task: str) -> torch.Tensor:
        return self.logit_scale * self.features(images) @ self.heads[task]

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^visual\.(?:class_embedding|positional_embedding|conv1|ln_pre|patch_dropout)",
                "blocks": [(r"^visual\.transformer\.resblocks\.(\d+)", None),
                           (r"^visual\.(?:ln_post|proj|attn_pool|ln_pool)", (99999,))]}

    def no_weight_decay(self) -> set[str]:
        return {"visual.class_embedding", "visual.positional_embedding"}


def optimizer(model: Classifier, recipe: Recipe, opt: str = "adamw") -> torch.optim.Optimizer:
    """AdamW with timm's layer-decay parameter groups (``lr_scale`` per group; no weight decay on
    1-d parameters and the embeddings)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=opt, lr=recipe.lr, weight_decay=recipe.weight_decay,
                               layer_decay=recipe.layer_decay if recipe.layer_decay < 1 else None)


def scheduler(opt: torch.optim.Optimizer, recipe: Recipe, n_train: int):
    """timm's cosine schedule in update steps with linear warmup; ``step_update(step)`` sets each
    group's lr to the schedule's value times the group's layer-decay scale."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(opt, t_initial=recipe.steps(n_train), warmup_t=recipe.warmup_steps(n_train),
                             warmup_lr_init=recipe.lr * 1e-3, lr_min=0.0, t_in_epochs=False)


def ema_decay(recipe: Recipe, step: int, n_train: int) -> float:
    """The EMA's decay at update ``step`` (1, 2, ...): Table 10's ``recipe.ema`` from the first
    step (timm's train.py without ``--model-ema-warmup``, as the paper's ``ModelEmaV2`` did), or,
    with ``recipe.ema_warmup_epochs``, a warm-up that reaches it at the end of those epochs: the
    EMA's horizon 1 / (1 - decay) grows linearly from 1 step (a copy of the weights) at step 0 to
    the stated one, 1 / (1 - ema), at the warm-up's last step, and stays there."""
    if recipe.ema <= 0:
        return 0.0
    warm = recipe.ema_warmup_steps(n_train)
    if not warm or step >= warm:
        return recipe.ema
    horizon = 1.0 + (1.0 / (1.0 - recipe.ema) - 1.0) * max(0, step) / warm
    return 1.0 - 1.0 / horizon


def ema(model: nn.Module, recipe: Recipe, n_train: int):
    """timm's EMA of the weights (``ModelEmaV3``, fp32) with the decay of ``ema_decay`` at each
    update (``update(model, step=k)`` after the k-th optimizer step); None when ``recipe.ema`` is
    0. (timm's own warm-up, ``use_warmup=True``, is 1 - (1 + k)^(-2/3): 0.9984 at step 15,600
    and Table 10's 0.9998 only near step 353k, never within 50 ImageNet epochs.)"""
    if recipe.ema <= 0:
        return None
    from timm.utils import ModelEmaV3

    class Ema(ModelEmaV3):
        def get_decay(self, step=None):
            return recipe.ema if step is None else ema_decay(recipe, step, n_train)

    return Ema(model, decay=recipe.ema, use_warmup=False)


def loss(recipe: Recipe) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy

    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return nn.CrossEntropyLoss()


def clip_gradients(model: nn.Module, recipe: Recipe) -> None:
    if recipe.clip_grad > 0:
        from timm.utils import dispatch_clip_grad

        dispatch_clip_grad([p for p in model.parameters() if p.requires_grad], value=recipe.clip_grad, mode="norm")


def train_transform(recipe: Recipe, image_size: int, mean, std):
    """timm's training transform: random resized crop (``crop_scale``), flips, RandAugment
    (``rand_augment``, timm's string: "rand-m8-n2-mstd101" is M = U(0, 8), N = 2), no colour
    jitter (the paper's 0), random erasing (``random_erase``)."""
    from timm.data import create_transform

    return create_transform(input_size=image_size, is_training=True, scale=recipe.crop_scale, hflip=recipe.hflip,
                            color_jitter=0.0, auto_augment=recipe.rand_augment or None, interpolation="bicubic",
                            mean=tuple(mean), std=tuple(std), re_prob=recipe.random_erase, re_mode="pixel")


def interpolate(zero_shot: Mapping[str, torch.Tensor], fine_tuned: Mapping[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """Patching: theta = (1 - alpha) theta_zero-shot + alpha theta_fine-tuned, key by key (floating
    tensors; others, e.g. integer buffers, from the fine-tuned model). alpha 0 and 1 give the two
    models exactly."""
    if set(zero_shot) != set(fine_tuned):
        raise ValueError(f"the two state dicts differ in keys: {sorted(set(zero_shot) ^ set(fine_tuned))[:5]}")
    out = {}
    for key, ft in fine_tuned.items():
        zs = zero_shot[key]
        if alpha == 0:
            out[key] = zs.clone()
        elif alpha == 1 or not torch.is_floating_point(ft):
            out[key] = ft.clone()
        else:
            out[key] = (1 - alpha) * zs + alpha * ft
    return out


def choose_alpha(sweep: list[dict], tolerance: float) -> dict:
    """The sweep's point (dicts with alpha, tasks_mean, control) with the highest mean accuracy
    on the tasks among those whose control accuracy stays within ``tolerance`` points of the
    zero-shot model's (alpha 0); ties go to the smaller alpha."""
    base = next(p for p in sweep if p["alpha"] == 0)["control"]
    allowed = [p for p in sweep if p["control"] >= base - tolerance - 1e-9]
    return max(allowed, key=lambda p: (p["tasks_mean"], -p["alpha"]))
