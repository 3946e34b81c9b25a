"""The grid of training runs: one run per (model, data scale, samples seen, schedule), with its
hyper-parameters.

This is the one place that turns a config into runs; the Snakefile, the trainer, the evaluator and
the results table all go through it.

Schedules (``grid.schedules``). ``cosine``, the paper's: every run from scratch with a cosine
learning rate over its whole length. ``const-cooldown`` (Hägele et al. 2024; open_clip's
``const-cooldown`` scheduler): per (model, data scale) one *trunk*, the run of the largest
samples seen, at a constant learning rate that cools down over its last ``train.cooldown.fraction``;
every smaller samples-seen cell is a *branch* that starts from the trunk's checkpoint at
``samples x (1 - fraction)`` and cools down over the rest. All runs of one (model, scale) share
one virtual epoch (``cooldown_plan``): the greatest common divisor of every branch point and
cooldown length, so that each branch point is a trunk checkpoint and open_clip's step count, data
order and learning rate up to it are the trunk's.

Seeds (``grid.seeds``, default 1). Each cell is trained ``seeds`` times; the run of seed index k
passes open_clip ``--seed`` config seed + k (its initialisation and data order). Seed 0 is the
run of a single-seed grid, with the same path and wildcards (adding seeds retrains nothing);
seed k > 0 suffixes the samples wildcard with ``-seed<k>`` ("90k-seed2", "90k-cooldown-seed2"),
so every path of the run (training, evaluation, features) is its own. A const-cooldown family
(trunk and branches) is one seed's: a branch of seed k starts from the trunk of seed k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import jsonschema

from clipscale.config import ConfigError, checked_count, dotted, format_count, load_schema, parse_count, section

COSINE, CONST_COOLDOWN = "cosine", "const-cooldown"
SCHEDULES = (COSINE, CONST_COOLDOWN)
SOURCE_OF_SCHEDULE = {COSINE: "ours", CONST_COOLDOWN: "ours-cooldown"}  # the results table's source
SCHEDULE_OF_SOURCE = {source: schedule for schedule, source in SOURCE_OF_SCHEDULE.items()}
# the samples wildcard of a const-cooldown run: "90k-cooldown" (a cosine run's is "90k")
COOLDOWN_SUFFIX = "-cooldown"
# the samples wildcard of a run of seed index k > 0: "90k-seed2", "90k-cooldown-seed2"
SEED_SUFFIX = "-seed"


def sources(config: dict) -> list[str]:
    """The results-table sources of the grid's runs: "ours" (cosine runs) and/or "ours-cooldown"."""
    schedules = section(config, "grid")["schedules"]
    return [SOURCE_OF_SCHEDULE[s] for s in SCHEDULES if s in schedules]


@dataclass(frozen=True, order=True)
class Run:
    model: str
    scale: str
    samples_seen: int  # nominal samples seen, as configured
    schedule: str = COSINE
    seed: int = 0  # seed index (0 .. grid.seeds - 1); open_clip's --seed is config seed + this

    @property
    def samples_label(self) -> str:
        """The nominal samples seen ("90k"): the table's samples_seen_label."""
        return format_count(self.samples_seen)

    @property
    def samples_key(self) -> str:
        """The run's {samples} wildcard: "90k", "90k-cooldown" for a const-cooldown run, and
        "-seed<k>" after it for a seed index k > 0 ("90k-seed1", "90k-cooldown-seed2")."""
        return (self.samples_label + (COOLDOWN_SUFFIX if self.schedule == CONST_COOLDOWN else "")
                + (f"{SEED_SUFFIX}{self.seed}" if self.seed else ""))

    @property
    def cell(self) -> "Run":
        """The run's cell: the same run with seed index 0 (what its seeds repeat)."""
        return Run(self.model, self.scale, self.samples_seen, self.schedule)

    @property
    def wildcards(self) -> dict:
        return {"model": self.model, "scale": self.scale, "samples": self.samples_key}

    @property
    def name(self) -> str:
        return f"{self.model}/{self.scale}/{self.samples_key}"

    @classmethod
    def from_wildcards(cls, model: str, scale: str, samples: str) -> "Run":
        seed = 0
        head, sep, tail = samples.rpartition(SEED_SUFFIX)
        if sep and tail.isdigit() and int(tail) > 0 and str(int(tail)) == tail:
            samples, seed = head, int(tail)
        if samples.endswith(COOLDOWN_SUFFIX):
            return cls(model, scale, parse_count(samples[: -len(COOLDOWN_SUFFIX)]), CONST_COOLDOWN, seed)
        return cls(model, scale, parse_count(samples), COSINE, seed)


def _matches(entry: dict, run: Run) -> bool:
    if "model" in entry and entry["model"] != run.model:
        return False
    if "scale" in entry and entry["scale"] != run.scale:
        return False
    if "samples_seen" in entry and parse_count(entry["samples_seen"]) != run.samples_seen:
        return False
    if "schedule" in entry and entry["schedule"] != run.schedule:
        return False
    return True


def seeds(config: dict) -> int:
    """grid.seeds: how many times each cell is trained (1: one run per cell)."""
    return int(config["grid"]["seeds"])


def open_clip_seed(config: dict, run: Run) -> int:
    """open_clip's --seed of a run: the config's seed plus the run's seed index."""
    return int(config["seed"]) + run.seed


def runs(config: dict) -> list[Run]:
    """All runs of the grid, minus grid.exclude, in a stable order (schedule by schedule, seed by
    seed within it; a single-seed grid's runs are seed 0's)."""
    grid = config["grid"]
    out = []
    for schedule in grid["schedules"]:
        for seed in range(seeds(config)):
            for model in grid["models"]:
                for scale in grid["scales"]:
                    for samples in grid["samples_seen"]:
                        run = Run(model, scale, parse_count(samples), schedule, seed)
                        if not any(_matches(e, run) for e in grid.get("exclude", [])):
                            out.append(run)
    return out


def exclude_problems(config: dict) -> list[str]:
    """grid.exclude entries that leave out no run of the grid (a samples seen, model, scale or
    schedule the grid does not run: a typo would exclude nothing, silently). Names not defined
    at all and counts that do not parse are ``problems``'s (which calls this one without them)."""
    grid = config["grid"]
    schedules = grid["schedules"]
    counts = [parse_count(n) for n in grid["samples_seen"]]
    full = [Run(m, s, n, sch) for sch in schedules for m in grid["models"] for s in grid["scales"] for n in counts]
    out = []
    for i, entry in enumerate(grid.get("exclude", [])):
        try:
            if any(_matches(entry, run) for run in full):
                continue
            count = parse_count(entry["samples_seen"]) if "samples_seen" in entry else None
        except ConfigError:
            continue
        where = f"grid.exclude[{i}]"
        if count is not None and count not in counts:
            out.append(f"{where}.samples_seen: {entry['samples_seen']!r} is not in grid.samples_seen "
                       f"{list(grid['samples_seen'])}: the entry leaves out no run")
        elif "model" in entry and entry["model"] not in grid["models"]:
            out.append(f"{where}.model: {entry['model']!r} is not in grid.models {list(grid['models'])}: "
                       f"the entry leaves out no run")
        elif "scale" in entry and entry["scale"] not in grid["scales"]:
            out.append(f"{where}.scale: {entry['scale']!r} is not in grid.scales {list(grid['scales'])}: "
                       f"the entry leaves out no run")
        elif "schedule" in entry and entry["schedule"] not in schedules:
            out.append(f"{where}.schedule: {entry['schedule']!r} is not in grid.schedules {list(schedules)}: "
                       f"the entry leaves out no run")
    return out


def source_of(run: Run) -> str:
    """The results table's source of a run's rows: "ours" (cosine, the paper's schedule) or
    "ours-cooldown" (const-cooldown): fits, analyses and figures tell them apart by it."""
    return SOURCE_OF_SCHEDULE[run.schedule]


def _family(config: dict, run: Run) -> list[Run]:
    """The const-cooldown runs of the grid that share ``run``'s model, data scale and seed
    (smallest first): a trunk and its branches."""
    return sorted((r for r in runs(config) if r.schedule == CONST_COOLDOWN
                   and (r.model, r.scale, r.seed) == (run.model, run.scale, run.seed)),
                  key=lambda r: r.samples_seen)


def _settings(config: dict, run: Run) -> dict:
    """config.train (the schema's defaults under any key it lacks) with every override matching
    ``run`` applied in order."""
    train = section(config, "train")
    settings = {k: v for k, v in train.items() if k != "overrides"}
    for entry in train.get("overrides") or []:
        if _matches(entry, run):
            settings.update({k: v for k, v in entry.items()
                             if k not in ("model", "scale", "samples_seen", "schedule", "cooldown")})
            settings["cooldown"] = {**settings["cooldown"], **entry.get("cooldown", {})}
    return settings


def cooldown_plan(config: dict, run: Run) -> dict:
    """The shared schedule of a const-cooldown run's family (its trunk's settings decide):
    ``unit`` (samples per virtual epoch), ``trunk`` (the Run), and per member (by samples seen)
    ``epochs``, ``cooldown_epochs`` and ``branch_epoch`` (the trunk checkpoint it starts from;
    None for the trunk), and the trunk's ``save_every`` (epochs between its checkpoints: every
    branch point is one, and there are at least train.checkpoints)."""
    family = _family(config, run)
    if run not in family:
        raise ConfigError(f"{run.name} is not a const-cooldown run of the grid")
    trunk = family[-1]
    fraction = _settings(config, trunk)["cooldown"]["fraction"]
    parts, cooldowns = [], {}
    for r in family:
        c = max(1, round(r.samples_seen * fraction))
        if c >= r.samples_seen:
            raise ConfigError(f"{r.name}: a cooldown of {c} samples leaves no constant phase; lower "
                              f"train.cooldown.fraction ({fraction})")
        cooldowns[r.samples_seen] = c
        parts += [c, r.samples_seen - c]
    unit = reduce(math.gcd, parts)
    members = {}
    for r in family:
        epochs, c = r.samples_seen // unit, cooldowns[r.samples_seen] // unit
        members[r.samples_seen] = {"epochs": epochs, "cooldown_epochs": c,
                                   "branch_epoch": None if r == trunk else epochs - c}
    branch_points = [m["branch_epoch"] for m in members.values() if m["branch_epoch"]]
    epochs = members[trunk.samples_seen]["epochs"]
    most = max(1, epochs // max(1, _settings(config, trunk)["checkpoints"]))
    every = reduce(math.gcd, branch_points) if branch_points else most
    every = max(d for d in range(1, every + 1) if every % d == 0 and d <= most)
    return {"unit": unit, "trunk": trunk, "members": members, "save_every": every,
            "fraction": fraction}


def trunk_of(config: dict, run: Run) -> tuple[Run, int] | None:
    """(the trunk, the epoch of its checkpoint that ``run`` starts from) for a const-cooldown
    branch; None for a trunk or a cosine run."""
    if run.schedule != CONST_COOLDOWN:
        return None
    plan = cooldown_plan(config, run)
    branch = plan["members"][run.samples_seen]["branch_epoch"]
    return None if branch is None else (plan["trunk"], branch)


def branches_of(config: dict, run: Run) -> dict[int, Run]:
    """branch epoch -> the branch starting there, for a const-cooldown trunk ({} otherwise)."""
    if run.schedule != CONST_COOLDOWN:
        return {}
    plan = cooldown_plan(config, run)
    if plan["trunk"] != run:
        return {}
    return {m["branch_epoch"]: Run(run.model, run.scale, samples, CONST_COOLDOWN, run.seed)
            for samples, m in plan["members"].items() if m["branch_epoch"] is not None}


def hparams(config: dict, run: Run) -> dict:
    """Training settings of one run: config.train with every matching override applied in order.

    Adds the derived schedule: ``train_num_samples`` per virtual epoch and ``epochs`` such that
    epochs x train_num_samples is the run's exact samples seen (``samples_seen_exact``).
    """
    settings = _settings(config, run)
    settings["schedule"] = run.schedule
    if run.schedule == CONST_COOLDOWN:
        # the family's shared virtual epoch; the run's own cooldown and, for a branch, the trunk
        # checkpoint it starts from (its samples seen count the trunk's steps before it)
        plan = cooldown_plan(config, run)
        member = plan["members"][run.samples_seen]
        epochs, per_epoch = member["epochs"], plan["unit"]
        trunk_settings = _settings(config, plan["trunk"])
        settings["cooldown"] = trunk_settings["cooldown"]
        settings["cooldown_epochs"] = member["cooldown_epochs"]
        settings["branch_epoch"] = member["branch_epoch"]
        settings["save_every"] = plan["save_every"] if member["branch_epoch"] is None else 1
        # what the run's prefix shares with the trunk must be the trunk's (workers: open_clip
        # rounds each epoch to a multiple of them, so the steps per epoch too)
        for key in ("lr", "wd", "beta2", "warmup", "batch_size", "accum_freq", "nproc", "nodes", "precision",
                    "workers", "shuffle_buffer"):
            settings[key] = trunk_settings[key]
    else:
        settings.pop("cooldown", None)
        epochs = settings["checkpoints"]
        per_epoch = max(1, run.samples_seen // epochs)
    settings["epochs"] = epochs
    settings["train_num_samples"] = per_epoch
    settings["world_size"] = settings["nproc"] * settings["nodes"]
    # a step's batch: per process x processes x accumulated batches (open_clip's --accum-freq)
    settings["global_batch_size"] = settings["batch_size"] * settings["world_size"] * settings["accum_freq"]
    per_epoch_exact = samples_per_epoch(per_epoch, settings["global_batch_size"], settings["workers"],
                                        settings["accum_freq"])
    settings["samples_seen_exact"] = epochs * per_epoch_exact
    # what this run's own jobs train: a branch starts at its trunk's checkpoint (the samples
    # before it are the trunk's, counted once in the study's compute)
    start = settings.get("branch_epoch") or 0
    settings["samples_trained_exact"] = (epochs - start) * per_epoch_exact
    return settings


def segment_ends(config: dict, run: Run) -> list[int]:
    """Epochs at which a run's jobs end before its last (``train.segments`` jobs per run in the
    DAG, cut at epochs E x k / S, at most one per epoch): [] for a run in one job. A
    const-cooldown trunk also ends a job at every branch point with ``train.branch_jobs`` (its
    branches start from that checkpoint as soon as it exists), and its cuts fall on the
    checkpoints it saves; a branch's cuts fall after its start."""
    hp = hparams(config, run)
    epochs, segments = hp["epochs"], hp["segments"]
    cuts = {round(epochs * k / segments) for k in range(1, segments)}
    if run.schedule == CONST_COOLDOWN:
        every = hp["save_every"]
        cuts = {c - c % every for c in cuts}
        if hp["branch_jobs"]:
            cuts |= set(branches_of(config, run))
        cuts = {c for c in cuts if c > (hp["branch_epoch"] or 0)}
    return sorted(cuts - {0, epochs})


def study_samples(config: dict) -> dict[str, int]:
    """Samples the grid's training jobs draw in all, per schedule (exact: whole batches): a
    cosine run trains all its samples, a const-cooldown branch only its cooldown."""
    out: dict[str, int] = {}
    for run in runs(config):
        out[run.schedule] = out.get(run.schedule, 0) + hparams(config, run)["samples_trained_exact"]
    return out


def segment_of(config: dict, run: Run, epoch: int) -> int | None:
    """The segment end whose job writes checkpoint ``epoch`` (None: the run's last job)."""
    return next((end for end in segment_ends(config, run) if end >= epoch), None)


def samples_per_epoch(train_num_samples: int, global_batch_size: int, workers: int, accum_freq: int = 1) -> int:
    """Samples open_clip_train really trains on per (virtual) epoch with --dataset-resampled: it
    rounds up to whole batches of all processes (global_batch_size / accum_freq each), then to
    a multiple of the dataloader workers (open_clip_train/data.py, get_wds_dataset); with
    gradient accumulation a step is accum_freq of those batches, and an epoch's batches beyond
    its last whole step are not trained on (open_clip_train/train.py). This is the paper's
    exact samples seen."""
    per_batch = global_batch_size // accum_freq
    batches = math.ceil(train_num_samples / per_batch)
    workers = max(1, workers)
    batches = math.ceil(batches / workers) * workers
    return batches // accum_freq * global_batch_size


def find_run(config: dict, model: str, scale: str, samples: str) -> Run:
    run = Run.from_wildcards(model, scale, samples)
    if run.samples_key != samples:  # "1200" for "1.2k": one run, one folder, one way to write it
        raise KeyError(f"samples seen {samples!r} of {model}/{scale} is written {run.samples_key!r} in the "
                       f"run's paths (e.g. results/train/{model}/{scale}/{run.samples_key}/run.json)")
    if run not in runs(config):
        raise KeyError(f"{run.name} is not a run of the configured grid")
    return run


# ---- the checks of the grid's settings (and of train's, which the grid resolves per run) ----

def problems(config: dict) -> list[str]:
    """What a JSON schema cannot express about grid.*, the names of models and scales, and
    train.* (per run: overrides, report_to), fit.comparisons' sources: names that must refer to
    each other, counts, names that would collide. Not the per-run checks (``run_problems``, which
    need a config without other problems)."""
    problems = []
    grid = config["grid"]
    models, scales = config["models"], config["scales"]
    for model in grid["models"]:
        if model not in models:
            problems.append(f"grid.models: {model!r} is not defined under models")
    for scale in grid["scales"]:
        if scale not in scales:
            problems.append(f"grid.scales: {scale!r} is not defined under scales")
    counts: dict[int, object] = {}
    for value in grid["samples_seen"]:
        n = checked_count(value, "grid.samples_seen", problems)
        if n in counts:
            problems.append(f"grid.samples_seen: {counts[n]!r} and {value!r} name the same count "
                            f"({format_count(n)}), so the same runs")
        elif n is not None:
            counts[n] = value
    for i, entry in enumerate(grid.get("exclude", [])):  # no default: absent, it is not in the params
        if "model" in entry and entry["model"] not in models:
            problems.append(f"grid.exclude[{i}].model: {entry['model']!r} is not defined under models")
        if "scale" in entry and entry["scale"] not in scales:
            problems.append(f"grid.exclude[{i}].scale: {entry['scale']!r} is not defined under scales")
        if "samples_seen" in entry:
            checked_count(entry["samples_seen"], f"grid.exclude[{i}].samples_seen", problems)
    if not problems:
        problems += exclude_problems(config)
    return (problems + name_problems(config) + override_problems(config) + comparison_problems(config)
            + report_problems(config))


def name_problems(config: dict) -> list[str]:
    """Names that would collide: a model, scale or set name of dots only ("." or "..": a folder
    of results/ would be its parent's or another run's), two models with one label (one line
    and one row in the figures and the results table), two scales of one size (one subset)."""
    problems = []
    for kind in ("models", "scales", "downstream"):
        for name in config[kind]:
            if not name.strip("."):
                problems.append(f"{kind}: {name!r} cannot name a folder (results/.../{name}/ is another "
                                f"folder); give it a name with a letter or digit")
    shown: dict[str, str] = {}
    for name, spec in config["models"].items():
        label = spec.get("label") or name
        if label in shown:
            problems.append(f"models.{name}.label: {label!r} is also models.{shown[label]}'s label (or "
                            f"name): figures and the results table would merge the two models")
        else:
            shown[label] = name
    sizes: dict[int, str] = {}
    for name, size in config["scales"].items():
        if size in sizes:
            problems.append(f"scales.{name}: {size} samples, as scales.{sizes[size]}: the same subset "
                            f"twice (give each scale its own size)")
        else:
            sizes[size] = name
    return problems


def override_problems(config: dict) -> list[str]:
    """train.overrides (applied per run by ``hparams``): keys that are no train setting, values
    the train schema refuses, a model, scale or count that selects nothing."""
    problems = []
    train_keys = dict(load_schema()["properties"]["train"]["properties"])
    del train_keys["overrides"]
    settings = jsonschema.Draft202012Validator({"type": "object", "properties": train_keys})
    for i, over in enumerate(config["train"].get("overrides") or []):  # no default, as grid.exclude
        unknown = set(over) - set(train_keys) - {"model", "scale", "samples_seen", "schedule"}
        if unknown:
            problems.append(f"train.overrides[{i}]: unknown keys {sorted(unknown)}")
        for e in settings.iter_errors(over):
            problems.append(f"train.overrides[{i}].{dotted(e)}: {e.message}")
        if "model" in over and over["model"] not in config["models"]:
            problems.append(f"train.overrides[{i}].model: {over['model']!r} is not a model")
        if "scale" in over and over["scale"] not in config["scales"]:
            problems.append(f"train.overrides[{i}].scale: {over['scale']!r} is not a scale")
        if "samples_seen" in over:
            checked_count(over["samples_seen"], f"train.overrides[{i}].samples_seen", problems)
    return problems


def comparison_problems(config: dict) -> list[str]:
    """A side of fit.comparisons naming runs of a schedule the grid does not run (e.g. source
    ours, the cosine runs, with grid.schedules [const-cooldown]): it would compare nothing."""
    made = sources(config)
    problems = []
    for i, spec in enumerate(config["fit"]["comparisons"] or []):
        for side in ("a", "b"):
            source = spec[side]["source"]
            if source in SCHEDULE_OF_SOURCE and source not in made:
                problems.append(
                    f"fit.comparisons[{i}].{side}.source: {source!r} are the "
                    f"{SCHEDULE_OF_SOURCE[source]} runs, and grid.schedules {list(config['grid']['schedules'])} makes none (its runs: "
                    f"{', '.join(repr(s) for s in made)})")
    return problems


def report_problems(config: dict) -> list[str]:
    """train.report_to (or an override's) naming wandb where the wandb package is missing: every
    training job would fail at its start."""
    import importlib.util

    train = config["train"]
    wanted = [("train.report_to", train["report_to"] or [])] + [
        (f"train.overrides[{i}].report_to", o.get("report_to") or [])
        for i, o in enumerate(train.get("overrides") or [])]
    return [f"{key}: wandb needs the wandb package (pip install wandb), which is not installed"
            for key, names in wanted if "wandb" in names and importlib.util.find_spec("wandb") is None]


MAX_COOLDOWN_EPOCHS = 10_000  # a const-cooldown family's virtual epochs (open_clip logs and saves per epoch)


def run_problems(config: dict) -> list[str]:
    """Per run (overrides applied; on a config without other problems): fewer samples per
    checkpoint than one global batch (open_clip_train cannot run it; clipscale.train.open_clip_args
    refuses it), and a walltime warning that would not come inside the walltime (reported once)."""
    labels = {parse_count(v): v for v in config["grid"]["samples_seen"]}
    train = config["train"]
    problems, walltime = [], None
    for run in runs(config):
        try:
            hp = hparams(config, run)
        except ConfigError as e:
            problems.append(f"grid.schedules: {e}")
            continue
        if run.schedule == CONST_COOLDOWN:
            if hp["train_num_samples"] < hp["global_batch_size"] or hp["epochs"] > MAX_COOLDOWN_EPOCHS:
                problems.append(
                    f"grid.schedules: const-cooldown: {run.name}'s runs share virtual epochs of "
                    f"{hp['train_num_samples']} samples (the greatest common divisor of every branch "
                    f"point and cooldown length, train.cooldown.fraction {hp['cooldown']['fraction']}), "
                    f"{hp['epochs']} of them; it needs at least one global batch "
                    f"({hp['global_batch_size']}) and at most {MAX_COOLDOWN_EPOCHS} epochs: choose "
                    f"samples_seen and a fraction with a larger common divisor (e.g. 10k, 30k, 90k and 0.2)")
            continue
        if walltime is None and hp["signal_lead_s"] >= hp["runtime"] * 60:
            walltime = (f"train.signal_lead_s: {hp['signal_lead_s']} s is not less than {run.name}'s walltime "
                        f"train.runtime {hp['runtime']} min: the job would stop before training")
        if hp["train_num_samples"] >= hp["global_batch_size"]:
            continue
        keys = ("checkpoints", "batch_size", "nproc", "nodes", "accum_freq")
        overridden = " after train.overrides" if any(hp[k] != train[k] for k in keys) else ""
        problems.append(
            f"grid.samples_seen: {labels[run.samples_seen]}: {run.name} has {hp['train_num_samples']} "
            f"samples per checkpoint ({run.samples_seen} / train.checkpoints {hp['checkpoints']}), less "
            f"than one global batch of {hp['global_batch_size']} (train.batch_size {hp['batch_size']} x "
            f"train.nproc {hp['nproc']} x train.nodes {hp['nodes']} x train.accum_freq {hp['accum_freq']}){overridden}; "
            f"raise samples_seen or "
            f"lower train.checkpoints or the batch")
    return problems + ([walltime] if walltime else [])
