"""Evaluation and the protocols' runs: zero-shot heads, accuracy, the loaded checkpoint, classification,
the intermediate step, patching's sweep."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from clipscale.finetune import recipe as rc
from clipscale.finetune.data import (FinetuneError, IMAGE_KEYS, Ranks, Skipped, TaskData, _all_shards, _label_set,
                                     _test_batches)
from clipscale.finetune.loop import Trainer

log = logging.getLogger("clipscale.finetune")


def _features(model: rc.Classifier, batches, ranks: Ranks):
    """Features and label sets of batches of (images, label sets)."""
    import torch

    feats, labels = [], []
    model.eval()
    with torch.no_grad():
        for images, target in batches:
            with ranks.autocast():
                feats.append(model.features(images.to(ranks.device)).float().cpu())
            labels += list(target)
    if not feats:
        return torch.empty(0, 0), []
    return torch.cat(feats), labels


def held_out_samples(task: TaskData, skipped: Skipped, ranks: Ranks = Ranks()) -> list[dict]:
    """This process's share of a set's held-out validation samples (``task.held_out``), undecoded:
    read once from the train shards that hold them, kept for the whole sweep."""
    import webdataset as wds

    picks = sorted(task.held_out)[ranks.rank::ranks.world]
    mine = set(picks)
    urls = sorted({url for url, _ in mine})
    if not urls:
        return []
    ds = (wds.WebDataset(urls, shardshuffle=False, handler=skipped, nodesplitter=_all_shards)
          .select(lambda sample: (sample.get("__url__"), sample.get("__key__")) in mine))
    return list(ds)


def _sample_batches(samples: list[dict], transform, batch_size: int, skipped: Skipped):
    """Batches (images, label sets) of undecoded samples (those that fail to decode are skipped
    and counted)."""
    import torch
    import webdataset as wds

    decoder = wds.autodecode.Decoder([wds.autodecode.imagehandler("pil")])
    keys = IMAGE_KEYS.split(";")
    images, labels = [], []
    for sample in samples:
        try:
            decoded = decoder(sample)
            image = next((decoded[k] for k in keys if k in decoded), None)
            if image is None or "cls" not in decoded:
                raise ValueError(f"sample {decoded.get('__key__')} lacks an image or a label")
            images.append(transform(image))
            labels.append(_label_set(decoded["cls"]))
        except Exception as e:  # noqa: BLE001 - as webdataset's handler does
            skipped(e)
        if len(images) == batch_size:
            yield torch.stack(images), labels
            images, labels = [], []
    if images:
        yield torch.stack(images), labels


def accuracy(model: rc.Classifier, head: str, task: TaskData, transform, batch_size: int, skipped: Skipped,
             ranks: Ranks = Ranks(), samples: list[dict] | None = None, columns: list[int] | None = None) -> float:
    """Top-1 accuracy (%) of ``head`` on a set's test split (its shards shared among the
    processes, their counts summed), or on ``samples`` (each process's share of a validation
    split). A sample is right when the top class is one of its label set (one class, or
    ImageNet-ReaL's several); samples with an empty label set are left out (ReaL's rule).
    ``columns``: the head's columns of the set's classes (a subset of the head's: ImageNet-A)."""
    batches = (_test_batches(task, transform, batch_size, skipped, ranks) if samples is None
               else _sample_batches(samples, transform, batch_size, skipped))
    feats, labels = _features(model, batches, ranks)
    correct = total = 0
    if labels:
        weights = model.heads[head].detach().float().cpu()
        top = (feats @ (weights if columns is None else weights[:, columns])).argmax(1).tolist()
        for pred, ok in zip(top, labels):
            if ok:
                total += 1
                correct += pred in ok
    correct, total = ranks.sum(correct, total)
    if not total:
        raise FinetuneError(f"downstream set {task.name}: no decodable {'test' if samples is None else 'validation'} "
                            f"image with a label")
    return 100.0 * correct / total


def zero_shot_head(clip_model, tokenizer, task: TaskData, device: str):
    """The zero-shot classifier of a set (clip_benchmark's, from its class names and templates):
    (embed_dim, n_classes)."""
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    return zero_shot_classifier(clip_model, tokenizer, task.classes, task.templates, device, amp=False).float().cpu()


# ---------------------------------------------------------------------------------------------
# the two protocols


@dataclass
class Loaded:
    """A checkpoint's CLIP model (eval mode), its evaluation transform and tokenizer, and the
    mean and std of its preprocessing (for the training transform)."""

    clip: object
    transform: object
    tokenizer: object
    image_size: int
    mean: tuple
    std: tuple

    @classmethod
    def load(cls, name: str, path: str, device: str, image_size: int | None = None) -> "Loaded":
        """The checkpoint as clip_benchmark loads it (weights only); at another ``image_size``
        (Table 9's 336/384 px rows) the model made for that size (open_clip's
        ``force_image_size``), its position embeddings interpolated from the checkpoint's
        (open_clip's ``resize_pos_embed``: bicubic), its evaluation transform at that size."""
        import open_clip

        from clipscale.evaluate.benchmark import Model

        if image_size:
            model, _, transform = open_clip.create_model_and_transforms(name, pretrained=path,
                                                                        force_image_size=image_size)
            model = model.to(device).eval()
            clip, tokenizer = model, open_clip.get_tokenizer(name)
        else:
            m = Model.load(name, path, device, amp=False)
            clip, transform, tokenizer = m.model, m.transform, m.tokenizer
        size = clip.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
        mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        return cls(clip, transform, tokenizer, size, mean, std)

    def resized(self, visual_state: Mapping) -> dict:
        """Image encoder weights of another image size (an intermediate step's at the
        checkpoint's size) with their position embeddings interpolated to this model's grid."""
        from open_clip.model import resize_pos_embed

        state = {f"visual.{k}": v for k, v in visual_state.items()}
        resize_pos_embed(state, self.clip)
        return {k.removeprefix("visual."): v for k, v in state.items()}

    def classifier(self, tasks: list[TaskData], device: str, train_heads: bool) -> rc.Classifier:
        import copy

        heads = {t.name: zero_shot_head(self.clip, self.tokenizer, t, device) for t in tasks}
        scale = float(self.clip.logit_scale.exp().item())
        return rc.Classifier(copy.deepcopy(self.clip.visual), heads, scale, train_heads=train_heads)


def class_columns(main: TaskData, other: TaskData) -> list[int] | None:
    """The main set's head columns of another set's classes, in its order: None when it has the
    same classes (its head as it is); for a subset (ImageNet-A's and -R's 200 of ImageNet's
    1,000 classes) the columns of those classes, the prediction made among them (timm's class
    mask); anything else is refused."""
    mine, theirs = main.classes, other.classes
    if theirs == mine:
        return None
    free: dict[str, list[int]] = {}
    for i, name in enumerate(mine):
        free.setdefault(name, []).append(i)
    columns = []
    for name in theirs:
        if not free.get(name):
            raise FinetuneError(f"robustness set {other.name} has other classes than {main.name}: "
                                f"{name!r} is not among them ({theirs[:5]} vs {mine[:5]})")
        columns.append(free[name].pop(0))
    return columns


def run_classification(loaded: Loaded, recipe: rc.Recipe, main: TaskData, robustness: list[TaskData], *,
                       device: str, seed: int, state_path: Path, fp: str, save_minutes: float,
                       ranks: Ranks = Ranks(), micro_batch: int | None = None, metric: str = "imagenet_ft_acc1",
                       start: Mapping | None = None) -> dict:
    """ImageNet-style fine-tuning on ``main``; accuracy on its test split and the robustness sets
    (with the main set's head, restricted to a robustness set's classes when it has a subset of
    them). ``start``: image encoder weights to start from (an intermediate step's) instead of the
    checkpoint's."""
    model = loaded.classifier([main], device, train_heads=recipe.train_head)
    columns = {t.name: class_columns(main, t) for t in robustness}  # before any training: refused early
    if start is not None:
        model.visual.load_state_dict(start)
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, [main], train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes, ranks=ranks, micro_batch=micro_batch)
    trained = trainer.run()
    skipped = Skipped("test sets")
    rows = [{"task": "finetune", "dataset": t.name, "metric": metric,
             "value": accuracy(trained, main.name, t, loaded.transform, recipe.batch_size, skipped, ranks,
                               columns=columns.get(t.name))}
            for t in [main, *robustness]]
    test_skipped, = ranks.sum(skipped.n)
    return {"rows": rows, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
            "train_samples": trainer.n_train, "ema_decay": trainer.ema_decays(),
            "final_loss": float(np.mean(trainer.losses[-20:])),
            "skipped": {"train": trainer.skipped.n, "test": int(test_skipped),
                        "examples": trainer.skipped.examples + skipped.examples}}


def run_intermediate(loaded: Loaded, recipe: rc.Recipe, task: TaskData, *, device: str, seed: int,
                     state_path: Path, fp: str, save_minutes: float, ranks: Ranks = Ranks(),
                     micro_batch: int | None = None) -> tuple[dict, dict]:
    """classification_in12k's intermediate step: the image encoder and a head initialised from
    the zero-shot classifier fine-tuned on ``task``'s train split (the paper's ImageNet-12k,
    Table 11); the trained (EMA) encoder's weights and what to record of the step."""
    model = loaded.classifier([task], device, train_heads=recipe.train_head)
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, [task], train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes, ranks=ranks, micro_batch=micro_batch)
    trained = trainer.run()
    weights = {k: v.detach().clone() for k, v in trained.visual.state_dict().items()}
    return weights, {"dataset": task.name, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
                     "train_samples": trainer.n_train, "ema_decay": trainer.ema_decays(),
                     "final_loss": float(np.mean(trainer.losses[-20:])), "skipped_train": trainer.skipped.n}


def run_patching(loaded: Loaded, recipe: rc.Recipe, tasks: list[TaskData], control: TaskData, *, alphas: int,
                 tolerance: float, device: str, seed: int, state_path: Path, fp: str, save_minutes: float,
                 ranks: Ranks = Ranks(), micro_batch: int | None = None) -> dict:
    """Joint fine-tuning on ``tasks`` (fixed zero-shot heads; their held-out validation samples
    left out), then the patching sweep. With validation splits (every set's ``held_out``), a is
    chosen on them, as Ilharco et al. choose it, and the test splits are evaluated at a = 0, the
    chosen a and a = 1 only; without, a is chosen on the test splits."""
    model = loaded.classifier([*tasks, control], device, train_heads=False)
    zero_shot = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, tasks, train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes, ranks=ranks, micro_batch=micro_batch)
    trained = trainer.run()
    fine_tuned = {k: v.detach().clone() for k, v in trained.visual.state_dict().items()}
    every = [*tasks, control]
    on_validation = all(t.held_out for t in every)
    skipped, val_skipped = Skipped("test sets"), Skipped("validation splits")
    held = {t.name: held_out_samples(t, val_skipped, ranks) for t in every} if on_validation else {}

    def evaluate(alpha: float, validation: bool) -> dict[str, float]:
        trained.visual.load_state_dict(rc.interpolate(zero_shot, fine_tuned, alpha))
        return {t.name: accuracy(trained, t.name, t, loaded.transform, recipe.batch_size,
                                 val_skipped if validation else skipped, ranks,
                                 samples=held[t.name] if validation else None) for t in every}

    sweep = []
    for i in range(alphas):
        alpha = round(i / (alphas - 1), 6)
        acc = evaluate(alpha, on_validation)
        sweep.append({"alpha": alpha, "accuracy": acc, "tasks_mean": float(np.mean([acc[t.name] for t in tasks])),
                      "control": acc[control.name]})
        if ranks.rank == 0:
            log.info("patching a = %.2f: tasks' mean %.2f, control %s %.2f (%s)", alpha, sweep[-1]["tasks_mean"],
                     control.name, acc[control.name], "validation splits" if on_validation else "test splits")
    chosen = rc.choose_alpha(sweep, tolerance)
    if on_validation:
        test = {a: evaluate(a, False) for a in sorted({0.0, chosen["alpha"], 1.0})}
    else:
        test = {p["alpha"]: p["accuracy"] for p in sweep}
    test_skipped, val_n = ranks.sum(skipped.n, val_skipped.n)
    rows = []
    for t in every:
        rows.append({"task": "patching", "dataset": t.name, "metric": "zeroshot_acc1", "value": test[0.0][t.name]})
        rows.append({"task": "finetune", "dataset": t.name, "metric": "ft_acc1", "value": test[1.0][t.name]})
        rows.append({"task": "patching", "dataset": t.name, "metric": "patched_acc1",
                     "value": test[chosen["alpha"]][t.name]})
    return {"rows": rows, "alpha": chosen["alpha"], "sweep": sweep,
            "alpha_chosen_on": "validation" if on_validation else "test",
            "validation_samples": {t.name: len(t.held_out) for t in every} if on_validation else {},
            "test_accuracy": [{"alpha": a, "accuracy": acc} for a, acc in test.items()] if on_validation else [],
            "control": control.name,
            "control_tolerance": tolerance, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
            "train_samples": trainer.n_train, "ema_decay": trainer.ema_decays(),
            "final_loss": float(np.mean(trainer.losses[-20:])),
            "skipped": {"train": trainer.skipped.n, "test": int(test_skipped), "validation": int(val_n),
                        "examples": trainer.skipped.examples + skipped.examples + val_skipped.examples}}
