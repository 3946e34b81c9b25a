"""One fine-tuning job: a checkpoint and a protocol (the paper's Sec. 4.4, supplement B.2.2).

* ``classification`` (ImageNet-style, the paper's Table 9): the image encoder and a head
  initialised from the zero-shot classifier are fine-tuned on the main set's train split with the
  recipe (``clipscale.finetune.recipe``), then evaluated (the EMA weights when the recipe keeps an
  EMA) on its test split and its robustness sets, which share its classes. Rows: task
  ``finetune``, metric ``imagenet_ft_acc1``, as the paper's Table 9.
* ``patching`` (the paper's Tables 7-8, after Ilharco et al. 2022): the image encoder is
  fine-tuned jointly on several tasks, one task's batch per step in turn, each task's head fixed
  to its zero-shot classifier; then theta = (1 - a) theta_zero-shot + a theta_fine-tuned for a in
  0, 0.1, ..., 1, and the a that maximises the tasks' mean accuracy while the control task (the
  main set, ImageNet in the paper) stays within ``control_tolerance`` points of the zero-shot
  model. As the paper reports it, a is chosen on the test splits (no validation split). Rows per
  task and the control: ``patching``/``zeroshot_acc1`` (a = 0), ``finetune``/``ft_acc1``
  (a = 1), ``patching``/``patched_acc1`` (the chosen a); the whole sweep is in the result file.

Resumable: the job saves its place (weights, EMA, optimizer, step) to ``state.pt`` beside its
result every ``save_minutes``, at the end of training and when SIGTERM or the walltime warning
SIGUSR1 arrives; a restarted job continues from there (the data stream is reseeded by the step,
so a resumed run sees other batches than an uninterrupted one would, not the same ones again).
A state made with other settings or from another checkpoint file is not resumed. Corrupt
images are skipped, counted and reported in the result.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import random
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from clipscale import files
from clipscale.config import ConfigError
from clipscale.finetune import recipe as rc

log = logging.getLogger("clipscale.finetune")

RESULT_FORMAT = 1
PROTOCOLS = ("classification", "patching")
IMAGE_KEYS = "jpg;jpeg;png;webp"


class FinetuneError(RuntimeError):
    """A fine-tuning job that cannot run (a set without train split or class names, ...)."""


@dataclass
class TaskData:
    """A downstream set in clip_benchmark's webdataset layout (classnames.txt, templates,
    train/ and test/ shards)."""

    name: str
    root: Path

    def shards(self, split: str) -> list[str]:
        urls = sorted(str(p) for p in (self.root / split).glob("*.tar"))
        if not urls:
            raise FinetuneError(f"downstream set {self.name}: {self.root / split} holds no .tar shards")
        return urls

    def _lines(self, name: str) -> list[str]:
        path = self.root / name
        if not path.is_file():
            raise FinetuneError(f"downstream set {self.name}: {path} is missing (fine-tuning needs class "
                                f"names and zero-shot templates)")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    @property
    def classes(self) -> list[str]:
        return self._lines("classnames.txt")

    @property
    def templates(self) -> list[str]:
        return self._lines("zeroshot_classification_templates.txt")

    def count(self, split: str) -> int:
        """Samples of a split: the labels (.cls members) in its shards' tar headers."""
        n = 0
        for url in self.shards(split):
            try:
                with tarfile.open(url) as tar:
                    n += sum(1 for m in tar if m.name.endswith(".cls"))
            except (tarfile.TarError, OSError) as e:
                raise FinetuneError(f"downstream set {self.name}: shard {url} cannot be read: {e}") from None
        if not n:
            raise FinetuneError(f"downstream set {self.name}: {self.root / split} holds no labelled samples")
        return n


class Skipped:
    """webdataset handler: counts (and logs the first few) samples that fail to decode."""

    def __init__(self, where: str):
        self.where, self.n, self.examples = where, 0, []

    def __call__(self, exn: Exception) -> bool:
        self.n += 1
        if len(self.examples) < 5:
            self.examples.append(f"{type(exn).__name__}: {exn}"[:300])
            log.warning("%s: skipped a sample: %s", self.where, self.examples[-1])
        return True


def _stream(task: TaskData, split: str, transform, batch_size: int, skipped: Skipped, *, seed: int | None):
    """Batches (images, labels) of a split: endless and shuffled (``seed``) for training, one pass
    in shard order for evaluation (``seed`` None)."""
    import webdataset as wds

    train = seed is not None
    urls = task.shards(split)
    if train:  # shards in a deterministic shuffled order, samples through a seeded buffer
        ds = (wds.WebDataset(urls, shardshuffle=len(urls), detshuffle=True, handler=skipped)
              .shuffle(2000, rng=random.Random(seed)))
    else:
        ds = wds.WebDataset(urls, shardshuffle=False, handler=skipped)
    ds = (ds.decode("pil", handler=skipped).to_tuple(IMAGE_KEYS, "cls", handler=skipped)
          .map_tuple(transform, int).batched(batch_size, partial=not train))
    return _endless(ds) if train else ds


def _endless(ds):
    """Pass after pass over a dataset (the shuffle buffer's RNG goes on: each pass in another
    order); stops only when a whole pass yields nothing."""
    while True:
        empty = True
        for batch in ds:
            empty = False
            yield batch
        if empty:
            return


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fingerprint(settings: Mapping, checkpoint_stamp: Mapping) -> str:
    blob = json.dumps({"settings": settings, "checkpoint": checkpoint_stamp}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_state(path: Path, expected: str) -> dict | None:
    """The saved place of this job (weights-only load), or None: no file, unreadable (logged), or
    made with other settings or another checkpoint file."""
    if not path.exists():
        return None
    try:
        state = files.load_weights_only(path)
    except Exception as e:  # noqa: BLE001 - an unreadable state is not resumed
        log.warning("%s cannot be read (%s: %s): starting afresh", path, type(e).__name__, e)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected:
        log.warning("%s was saved with other settings or from another checkpoint file: starting afresh", path)
        return None
    return state


class Trainer:
    """The fine-tuning loop shared by both protocols: ``tasks`` are trained in turn, one batch each
    per step (one task: ImageNet-style)."""

    def __init__(self, model: rc.Classifier, recipe: rc.Recipe, tasks: list[TaskData], transform, *,
                 device: str, seed: int, state_path: Path, fingerprint: str, save_minutes: float):
        import torch

        self.model, self.recipe, self.tasks = model.to(device), recipe, tasks
        self.transform, self.device, self.seed = transform, device, seed
        self.state_path, self.fingerprint, self.save_s = state_path, fingerprint, 60 * save_minutes
        self.n_train = sum(t.count("train") for t in tasks)
        self.total = recipe.steps(self.n_train)
        self.opt = rc.optimizer(self.model, recipe)
        self.sched = rc.scheduler(self.opt, recipe, self.n_train)
        self.ema = rc.ema(self.model, recipe)
        self.criterion = rc.loss(recipe)
        self.skipped = Skipped("fine-tuning data")
        self.step, self.resumed_from = 0, None
        self.losses: list[float] = []
        state = load_state(state_path, fingerprint)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            if self.ema is not None:
                self.ema.module.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng"])
            self.step = self.resumed_from = int(state["step"])
            self.skipped.n = int(state.get("skipped", 0))
            self.losses = [float(x) for x in state.get("losses", [])]
            log.info("resumed from %s at step %d of %d", state_path, self.step, self.total)

    def save(self, done: bool = False) -> None:
        import torch

        files.torch_save({"fingerprint": self.fingerprint, "step": self.step, "done": done,
                          "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                          "ema": self.ema.module.state_dict() if self.ema is not None else {},
                          "rng": torch.get_rng_state(), "skipped": self.skipped.n, "losses": self.losses},
                         self.state_path)

    def _streams(self):
        return {t.name: iter(_stream(t, "train", self.transform, self.recipe.batch_size, self.skipped,
                                     seed=self.seed * 1_000_003 + self.step * 101 + i))
                for i, t in enumerate(self.tasks)}

    def run(self) -> rc.Classifier:
        """Train to the recipe's last step (from a saved place if there is one); the model to
        evaluate (the EMA's when the recipe keeps one)."""
        import torch

        from clipscale import stopping

        _seed_everything(self.seed + self.step)
        self.model.train()
        streams = self._streams()
        last_save, t0, start = time.time(), time.time(), self.step
        log.info("fine-tuning %d steps of batch %d on %s (%d training samples), lr %g, layer decay %g, "
                 "EMA %g", self.total, self.recipe.batch_size, ", ".join(t.name for t in self.tasks),
                 self.n_train, self.recipe.lr, self.recipe.layer_decay, self.recipe.ema)
        with stopping.stop_on_signals(watch_parent=False) as stop:
            while self.step < self.total:
                task = self.tasks[self.step % len(self.tasks)]
                try:
                    images, labels = next(streams[task.name])
                except StopIteration:
                    raise FinetuneError(f"downstream set {task.name}: no decodable training sample "
                                        f"({self.skipped.n} skipped)") from None
                self.sched.step_update(num_updates=self.step)
                logits = self.model(images.to(self.device), task.name)
                loss = self.criterion(logits, torch.as_tensor(labels).to(self.device))
                if not torch.isfinite(loss):
                    raise FinetuneError(f"fine-tuning diverged at step {self.step} (loss {loss.item()}): "
                                        f"lower finetune.recipe.lr")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                rc.clip_gradients(self.model, self.recipe)
                self.opt.step()
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=self.step)
                self.losses.append(round(loss.item(), 5))
                if self.step % 50 == 0 or self.step == self.total:
                    rate = (self.step - start) / max(1e-9, time.time() - t0)
                    log.info("step %d/%d loss %.4f (%.2f steps/s, %d samples skipped)", self.step, self.total,
                             float(np.mean(self.losses[-50:])), rate, self.skipped.n)
                if stop.save_requested:
                    self.save()
                    raise stopping.TrainingStopped(stop.signum, f"saved at step {self.step} in {self.state_path}")
                if time.time() - last_save > self.save_s:
                    self.save()
                    last_save = time.time()
        self.save(done=True)
        trained = self.ema.module if self.ema is not None else self.model
        return trained.eval()


def _features(model: rc.Classifier, task: TaskData, transform, batch_size: int, device: str,
              skipped: Skipped):
    import torch

    feats, labels = [], []
    model.eval()
    with torch.no_grad():
        for images, target in _stream(task, "test", transform, batch_size, skipped, seed=None):
            feats.append(model.features(images.to(device)).cpu())
            labels.append(torch.as_tensor(target))
    if not feats:
        raise FinetuneError(f"downstream set {task.name}: no decodable test image")
    return torch.cat(feats), torch.cat(labels)


def accuracy(model: rc.Classifier, head: str, task: TaskData, transform, batch_size: int, device: str,
             skipped: Skipped) -> float:
    """Top-1 accuracy (%) of ``head`` on a set's test split."""
    feats, labels = _features(model, task, transform, batch_size, device, skipped)
    logits = feats @ model.heads[head].detach().cpu()
    return float((logits.argmax(1) == labels).float().mean() * 100)


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
    def load(cls, name: str, path: str, device: str) -> "Loaded":
        import open_clip

        from clipscale.evaluate.benchmark import Model

        m = Model.load(name, path, device, amp=False)  # as clip_benchmark loads it (weights only)
        size = m.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        cfg = getattr(m.model.visual, "preprocess_cfg", {}) or {}
        mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        return cls(m.model, m.transform, m.tokenizer, size, mean, std)

    def classifier(self, tasks: list[TaskData], device: str, train_heads: bool) -> rc.Classifier:
        import copy

        heads = {t.name: zero_shot_head(self.clip, self.tokenizer, t, device) for t in tasks}
        scale = float(self.clip.logit_scale.exp().item())
        return rc.Classifier(copy.deepcopy(self.clip.visual), heads, scale, train_heads=train_heads)


def run_classification(loaded: Loaded, recipe: rc.Recipe, main: TaskData, robustness: list[TaskData], *,
                       device: str, seed: int, state_path: Path, fp: str, save_minutes: float) -> dict:
    """ImageNet-style fine-tuning on ``main``; accuracy on its test split and the robustness sets."""
    model = loaded.classifier([main], device, train_heads=recipe.train_head)
    for t in robustness:  # same classes, the main set's head
        if t.classes != main.classes:
            raise FinetuneError(f"robustness set {t.name} has other classes than {main.name}: "
                                f"{t.classes[:5]} vs {main.classes[:5]}")
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, [main], train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes)
    trained = trainer.run()
    skipped = Skipped("test sets")
    rows = [{"task": "finetune", "dataset": t.name, "metric": "imagenet_ft_acc1",
             "value": accuracy(trained, main.name, t, loaded.transform, recipe.batch_size, device, skipped)}
            for t in [main, *robustness]]
    return {"rows": rows, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
            "train_samples": trainer.n_train, "final_loss": float(np.mean(trainer.losses[-20:])),
            "skipped": {"train": trainer.skipped.n, "test": skipped.n,
                        "examples": trainer.skipped.examples + skipped.examples}}


def run_patching(loaded: Loaded, recipe: rc.Recipe, tasks: list[TaskData], control: TaskData, *, alphas: int,
                 tolerance: float, device: str, seed: int, state_path: Path, fp: str, save_minutes: float) -> dict:
    """Joint fine-tuning on ``tasks`` (fixed zero-shot heads), then the patching sweep."""
    model = loaded.classifier([*tasks, control], device, train_heads=False)
    zero_shot = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
    rc.add_stochastic_depth(model.visual, recipe.drop_path)
    train_tf = rc.train_transform(recipe, loaded.image_size, loaded.mean, loaded.std)
    trainer = Trainer(model, recipe, tasks, train_tf, device=device, seed=seed, state_path=state_path,
                      fingerprint=fp, save_minutes=save_minutes)
    trained = trainer.run()
    fine_tuned = {k: v.detach().clone() for k, v in trained.visual.state_dict().items()}
    skipped = Skipped("test sets")
    sweep = []
    for i in range(alphas):
        alpha = round(i / (alphas - 1), 6)
        trained.visual.load_state_dict(rc.interpolate(zero_shot, fine_tuned, alpha))
        acc = {t.name: accuracy(trained, t.name, t, loaded.transform, recipe.batch_size, device, skipped)
               for t in [*tasks, control]}
        sweep.append({"alpha": alpha, "accuracy": acc, "tasks_mean": float(np.mean([acc[t.name] for t in tasks])),
                      "control": acc[control.name]})
        log.info("patching a = %.2f: tasks' mean %.2f, control %s %.2f", alpha, sweep[-1]["tasks_mean"],
                 control.name, acc[control.name])
    chosen = rc.choose_alpha(sweep, tolerance)
    by_alpha = {p["alpha"]: p for p in sweep}
    rows = []
    for t in [*tasks, control]:
        rows.append({"task": "patching", "dataset": t.name, "metric": "zeroshot_acc1", "value": by_alpha[0]["accuracy"][t.name]})
        rows.append({"task": "finetune", "dataset": t.name, "metric": "ft_acc1", "value": by_alpha[1]["accuracy"][t.name]})
        rows.append({"task": "patching", "dataset": t.name, "metric": "patched_acc1", "value": chosen["accuracy"][t.name]})
    return {"rows": rows, "alpha": chosen["alpha"], "sweep": sweep, "control": control.name,
            "control_tolerance": tolerance, "steps": trainer.total, "resumed_from_step": trainer.resumed_from,
            "train_samples": trainer.n_train, "final_loss": float(np.mean(trainer.losses[-20:])),
            "skipped": {"train": trainer.skipped.n, "test": skipped.n,
                        "examples": trainer.skipped.examples + skipped.examples}}


def finetune_checkpoint(config: dict, model: str, scale: str, samples: str, protocol: str, output: str | Path, *,
                        run_record: str | Path | None = None, device: str | None = None,
                        threads: int | None = None) -> dict:
    """Fine-tune the final checkpoint of one of our runs with one protocol; write the result file
    (its table rows, the sweep, steps, skipped samples) to ``output``; its saved place is
    ``state.pt`` beside it, resumed only when made from the same checkpoint file with the same
    training settings (recipe, training sets, seed)."""
    import torch

    from clipscale import grid, models
    from clipscale.evaluate.benchmark import resolve_device
    from clipscale.evaluate.checkpoints import check_checkpoint, our_checkpoint, stamp, table_row
    from clipscale.finetune import plan

    if protocol not in PROTOCOLS:
        raise ConfigError(f"finetune: unknown protocol {protocol!r} (expected one of {list(PROTOCOLS)})")
    ft = plan.section(config)
    torch.set_num_threads(threads or ft["threads"])
    device = device or resolve_device(ft["device"])
    output = Path(output)
    run = grid.find_run(config, model, scale, samples)
    info = our_checkpoint(config, model, scale, samples, grid.hparams(config, run)["epochs"], run_record)
    check_checkpoint(info.path)
    recipe = rc.Recipe.of(plan.recipe_settings(config, protocol, model))
    sets = {name: TaskData(name, Path(plan.dataset_dir(config, name))) for name in plan.datasets(config, protocol)}
    seed = int(config.get("seed", 0))
    trained_on = plan.datasets(config, protocol)[:1] if protocol == "classification" else ft["patching"]["tasks"]
    fp = fingerprint({"protocol": protocol, "recipe": plan.recipe_settings(config, protocol, model), "seed": seed,
                      "train": {n: str(sets[n].root) for n in trained_on}}, stamp(info.path))
    models.register(config)
    t0 = time.time()
    loaded = Loaded.load(info.model, info.path, device)
    log.info("%s: %s fine-tuning of %s (%s) on %s", run.name, protocol, info.path, info.label, device)
    common = dict(device=device, seed=seed, state_path=output.parent / "state.pt", fp=fp,
                  save_minutes=ft["save_minutes"])
    if protocol == "classification":
        names = plan.datasets(config, protocol)
        out = run_classification(loaded, recipe, sets[names[0]], [sets[n] for n in names[1:]], **common)
    else:
        p = ft["patching"]
        out = run_patching(loaded, recipe, [sets[n] for n in p["tasks"]], sets[p["control"]], alphas=p["alphas"],
                           tolerance=p["control_tolerance"], **common)
    result = {"format": RESULT_FORMAT, "protocol": protocol, "row": table_row(info), "checkpoint_path": info.path,
              "fingerprint": fp, "recipe": plan.recipe_settings(config, protocol, model), **out, "device": device,
              "seconds": round(time.time() - t0, 2),
              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    files.write_json(output, result)
    if out["skipped"]["train"] or out["skipped"]["test"]:
        log.warning("%s: skipped %d training and %d test samples that did not decode (see %s)", run.name,
                    out["skipped"]["train"], out["skipped"]["test"], output)
    log.info("%s %s done in %.0f s: %s", run.name, protocol, time.time() - t0,
             ", ".join(f"{r['dataset']} {r['metric']}={r['value']:.2f}" for r in out["rows"]))
    return result


def result_rows(files) -> tuple[list[dict], list[str]]:
    """Rows of the results table from fine-tuning result files, and log lines for the files that
    are missing or unreadable and for skipped samples."""
    rows, lines = [], []
    for path in files:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            base, items = data["row"], data["rows"]
        except FileNotFoundError:
            lines.append(f"MISSING    fine-tuning result {path} (see results/logs/finetune/)")
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:
            lines.append(f"UNREADABLE fine-tuning result {path}: {e}")
            continue
        from clipscale.table import RESULTS_COLUMNS

        for item in items:
            rows.append({**{k: base.get(k) for k in RESULTS_COLUMNS if k in base},
                         "data_size": base.get("data_size"), **item})
        sk = data.get("skipped", {})
        if sk.get("train") or sk.get("test"):
            lines.append(f"SKIPPED    fine-tuning {path}: {sk.get('train', 0)} training and {sk.get('test', 0)} "
                         f"test samples did not decode ({'; '.join(sk.get('examples', [])[:2])})")
    return rows, lines
