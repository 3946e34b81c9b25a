"""Every rule's resources come from clipscale.resources, in the names the Slurm plugin reads: the
sbatch command the plugin would build for a training job and an evaluation job asks for GPUs
when the config gives them GPUs, and for none on a CPU-only config.

The sbatch command is built by snakemake-executor-plugin-slurm's own functions
(``get_submit_command`` + ``set_gres_string``, as its executor does) from the resources each job
of a real dry run (``snakemake -n --profile profiles/slurm``) shows.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import CI_CONFIG, REPO

from clipscale import launch, resources

PROFILE = REPO / "profiles" / "slurm"


class _Resources(dict):
    """A job's resources as the plugin reads them: .get() and attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _value(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else text.strip("'\"")


def dry_run_resources(tmp_path: Path, cfg: dict) -> dict[str, dict]:
    """rule -> resources of its first job in a dry run of the pipeline with the Slurm profile."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
                          "-d", str(tmp_path), "--configfile", str(path), "--profile", str(PROFILE), "-n",
                          "--forceall"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    jobs = {}
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", out.stdout, re.M):
        res = re.search(r"^\s+resources: (.*)$", m.group(2), re.M)
        threads = re.search(r"^\s+threads: (\d+)$", m.group(2), re.M)
        items = dict(i.split("=", 1) for i in res.group(1).split(", ") if "=" in i) if res else {}
        jobs.setdefault(m.group(1), {"threads": int(threads.group(1)) if threads else 1,
                                     **{k: _value(v) for k, v in items.items()}})
    return jobs


def sbatch_command(job: dict) -> str:
    """The plugin's sbatch call for a job with these resources (its executor adds the GRES part)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    fake = SimpleNamespace(resources=_Resources({k: v for k, v in job.items() if k != "threads"}),
                           threads=job["threads"])
    params = {"run_uuid": "test", "slurm_logfile": "log", "comment_str": "c", "account": "",
              "partition": "", "workdir": "."}
    return get_submit_command(fake, params) + set_gres_string(fake)


def _gpu_config() -> dict:
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["train"].update({"gpus_per_node": 1, "nproc": 1, "device": "auto"})
    cfg["evaluate"] = {**cfg["evaluate"], "gpus": 1}
    cfg["finetune"] = {**cfg["finetune"], "gpus_per_node": 1}
    return cfg


@pytest.mark.parametrize("gpus", [True, False], ids=["gpu", "cpu"])
def test_training_and_evaluation_jobs_ask_for_gpus_only_with_a_gpu_config(tmp_path, gpus):
    cfg = _gpu_config() if gpus else yaml.safe_load(CI_CONFIG.read_text())
    cfg["dedup"]["modes"] = ["phash", "embedding"]  # the image encoder's jobs: on the GPUs too
    jobs = dry_run_resources(tmp_path, cfg)
    on_gpus = ("train", "evaluate", "finetune", "dedup_embed_pool", "dedup_embed_downstream")
    for rule in on_gpus:
        call = sbatch_command(jobs[rule])
        if gpus:  # GPUs per node (--gres), never a total (--gpus) nor --ntasks-per-gpu
            assert "--gres=gpu:1" in call and "--ntasks-per-gpu" not in call, (rule, call)
            assert "--gpus" not in call, (rule, call)
        else:
            assert "--gpus" not in call and "--gres" not in call, (rule, call)
        assert re.search(r"-t \S+", call) and "--mem " in call, (rule, call)
    for rule, job in jobs.items():  # only training, evaluation, fine-tuning and encoding use GPUs
        if rule not in on_gpus:
            assert not job.get("gpu") and not job.get("gres"), rule


def test_a_multi_gpu_run_asks_for_one_task_per_gpu_on_every_node(tmp_path):
    """open_clip's documented shape: --nodes=N --ntasks-per-node=G --gres=gpu:G --cpus-per-task=C
    (not --gpus=N*G, a total Slurm may spread unevenly, nor --ntasks-per-gpu, which makes the
    srun inside the job fail); the srun the job starts agrees with it."""
    cfg = _gpu_config()
    cfg["train"].update({"gpus_per_node": 4, "nproc": 4, "nodes": 2, "threads": 6})
    cfg["grid"]["samples_seen"] = ["8k"]  # one global batch (4 x 2 x 128) per checkpoint at least
    cfg["finetune"]["enabled"] = False
    cfg["finetune"].pop("runs", None)
    job = dry_run_resources(tmp_path, cfg)["train"]
    call = sbatch_command(job)
    for part in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--cpus-per-task=6"):
        assert part in call, (part, call)
    assert "--gpus" not in call and "--ntasks-per-gpu" not in call and "--ntasks=" not in call, call
    assert job["mpi"] == "srun"
    srun = launch.launch_command(4, 2, under_slurm=True, cpus_per_task=6, gpus=True)
    for part in ("--nodes=2", "--ntasks-per-node=4", "--ntasks=8", "--cpus-per-task=6", "--accel-bind=gn"):
        assert part in srun, (part, srun)


def test_one_process_per_node_on_several_nodes_asks_for_one_task_per_node(tmp_path):
    cfg = _gpu_config()
    cfg["train"].update({"gpus_per_node": 1, "nproc": 1, "nodes": 3})
    cfg["grid"]["samples_seen"] = ["8k"]
    cfg["finetune"]["enabled"] = False
    cfg["finetune"].pop("runs", None)
    call = sbatch_command(dry_run_resources(tmp_path, cfg)["train"])
    assert "--nodes=3" in call and "--ntasks=3" in call and "--gres=gpu:1" in call, call


def test_a_site_slurm_extra_for_training_is_refused_unless_it_keeps_the_walltime_options(tmp_path):
    """A profile's set-resources: train: slurm_extra replaces the pipeline's: refused before
    any job, naming the key and what it lacks; accepted when it keeps them."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    base = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
            "--configfile", str(path), "--profile", str(PROFILE), "-n"]
    out = subprocess.run([*base, "--set-resources", "train:slurm_extra='--exclusive'"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "set-resources: train: slurm_extra ('--exclusive'" in text and "--signal=USR1@" in text, text[-3000:]
    lead = cfg["train"].get("signal_lead_s", 300)
    kept = f"train:slurm_extra='--exclusive --signal=USR1@{lead} --requeue --open-mode=append'"
    out = subprocess.run([*base, "--set-resources", kept], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


def test_a_training_job_asks_for_the_walltime_warning_and_may_be_requeued(tmp_path):
    """sbatch --signal=USR1@<train.signal_lead_s> --requeue on training jobs only (the job saves
    its place at the warning and requeues itself), accepted by the plugin's slurm_extra check."""
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["train"]["signal_lead_s"] = 240
    jobs = dry_run_resources(tmp_path, cfg)
    call = sbatch_command(jobs["train"])
    assert "--signal=USR1@240 --requeue" in call, call
    validate_slurm_extra(SimpleNamespace(resources=_Resources(jobs["train"])))
    for rule, job in jobs.items():
        if rule != "train":
            assert "--signal" not in sbatch_command(job), rule


def test_every_rule_has_its_resources_from_one_place():
    """Every rule of the pipeline is sized by clipscale.resources (a rule added without an entry
    fails here, not on a cluster)."""
    out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
                          "--list-rules", "--configfile", str(CI_CONFIG)], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    rules = {line.split()[0] for line in out.stdout.splitlines() if line.strip()} - {"all", "published"}
    assert {"train", "evaluate", "dedup_hash_pool", "figure_compute"} <= rules
    cfg = copy.deepcopy(yaml.safe_load(CI_CONFIG.read_text()))
    from clipscale import config as cs_config

    cs_config.validate(cfg)
    for rule in sorted(rules):
        got = resources.of(cfg, rule)
        assert {"threads", "mem_mb", "runtime"} <= set(got), rule


def test_const_cooldown_trunk_segments_and_branches_are_training_jobs_on_gpus(tmp_path):
    """grid.schedules const-cooldown: the trunk's jobs up to a branch point (train_segment) and
    the branches (train) ask for the GPUs, the walltime warning and requeue as any training job."""
    cfg = _gpu_config()
    cfg["grid"]["schedules"] = ["const-cooldown"]
    cfg["train"]["cooldown"] = {"fraction": 0.5}  # 2k and 4k: branch point 1k, a common epoch of 1k
    jobs = dry_run_resources(tmp_path, cfg)
    for rule in ("train_segment", "train"):
        call = sbatch_command(jobs[rule])
        assert "--gres=gpu:1" in call and "--signal=USR1@300 --requeue" in call, (rule, call)


# scheduling priorities (clipscale.resources.priority) -----------------------------------------


def _wildcards(**values):
    """A job's wildcards as Snakemake passes them to a priority function."""
    class Wildcards(SimpleNamespace):
        def keys(self):
            return vars(self).keys()

    return Wildcards(**values)


def _training_jobs(cfg: dict) -> dict[str, float]:
    """'<run> until <epoch|end>' -> priority, for every training job of the grid."""
    from clipscale import grid

    out = {}
    for run in grid.runs(cfg):
        w = run.wildcards
        for end in grid.segment_ends(cfg, run):
            out[f"{run.name} until {end}"] = resources.priority(cfg, "train_segment")(_wildcards(**w, epoch=str(end)))
        out[f"{run.name} until end"] = resources.priority(cfg, "train")(_wildcards(**w))
    return out


def test_the_longest_training_chains_start_first_and_data_before_any():
    """On the embedded default: the ViT-M trunk segments that carry the most work come first, a
    trunk's first segment before its later ones, every training job after the data it reads and
    the work that needs no training, and before the evaluations."""
    from clipscale import config as cs_config

    cfg = cs_config.load(REPO / "config" / "config.yaml")
    cfg["train"]["branch_jobs"] = True  # a cluster's: trunks end a job at each branch point
    jobs = _training_jobs(cfg)
    assert len(jobs) == 45  # 9 trunks in 3 jobs each, 18 branches
    first = max(jobs, key=jobs.get)
    assert first.startswith("vit-m/") and first.endswith("90k-cooldown until 4"), first
    for model in ("vit-xs", "vit-s", "vit-m"):
        trunk = [jobs[f"{model}/48k/90k-cooldown until {e}"] for e in ("4", "12", "end")]
        assert trunk == sorted(trunk, reverse=True), (model, trunk)
    assert jobs["vit-m/48k/90k-cooldown until 4"] > jobs["vit-s/48k/90k-cooldown until 4"] > \
        jobs["vit-xs/48k/90k-cooldown until 4"]
    data = [resources.priority(cfg, r) for r in ("make_world", "index_pool", "subset", "model_profile")]
    independent = [resources.priority(cfg, "published_table"), resources.priority(cfg, "dedup_hash_pool"),
                   resources.priority(cfg, "fit_input")(_wildcards(input="published"))]
    assert min(data) > max(independent) > max(jobs.values())
    assert min(jobs.values()) > resources.priority(cfg, "evaluate")
    one_job = _training_jobs(cs_config.load(REPO / "config" / "config.yaml"))  # the default's
    assert len(one_job) == 27 and max(one_job, key=one_job.get).startswith("vit-m/")
    assert all(one_job[f"{m}/48k/90k-cooldown until end"] > one_job[f"{m}/48k/30k-cooldown until end"]
               for m in ("vit-xs", "vit-s", "vit-m"))
    # from our checkpoints to our figures: evaluation, the table, the fit, the figures
    ours = _wildcards(input="ours")
    assert resources.priority(cfg, "aggregate_results") > resources.priority(cfg, "fit_input")(ours) >= \
        resources.priority(cfg, "fit_comparison")(ours)


def test_figures_of_our_runs_wait_and_the_papers_go_early():
    from clipscale import config as cs_config
    from clipscale import figures

    cfg = cs_config.load(REPO / "config" / "config.yaml")
    specs = {s.name: s for s in figures.figure_specs(cfg)}
    prio = {name: resources.priority(cfg, f"figure_{s.kind}", figures=specs)(_wildcards(figure=name))
            for name, s in specs.items()}
    assert prio["zeroshot_ours"] < prio["imagenet_zeroshot_published"] == resources.INDEPENDENT
    assert prio["overlap_ours"] == prio["overlap_published"] == resources.INDEPENDENT  # no training read
    assert prio["zeroshot_ours"] < resources.priority(cfg, "fit_input")(_wildcards(input="ours"))
    # the training and learning curves read our runs: with our other figures, after the evaluations
    for rule in ("figure_training_curves", "figure_learning_curves"):
        assert resources.priority(cfg, rule) == resources.FIGURE_OURS < resources.EVALUATE, rule


def test_deduplicated_training_waits_for_the_dedup_chain_first():
    from clipscale import config as cs_config

    cfg = cs_config.load(REPO / "config" / "config.yaml")
    cfg["dedup"]["remove_duplicates"] = True
    for rule in ("dedup_hash_pool", "dedup_match", "dedup_filter_subset"):
        assert resources.priority(cfg, rule) == resources.DATA, rule


def test_every_rule_takes_its_priority_from_one_place():
    """Each rule of the workflow declares clipscale.resources.priority (read from the rules
    Snakemake parsed): a rule added without one would run in no chosen order."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=2),
                                config_settings=ConfigSettings(configfiles=[CI_CONFIG]),
                                snakefile=REPO / "Snakefile", workdir=REPO)
        rules = {r.name: r.priority for r in workflow._workflow.rules}
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    from clipscale import config as cs_config

    cs_config.validate(cfg)
    targets = {"all", "published"}  # rules without jobs of their own
    for name, declared in rules.items():
        if name in targets:
            continue
        expected = resources.priority(cfg, name)
        if callable(expected):
            assert callable(declared) and declared.__qualname__ == expected.__qualname__, name
        else:
            assert declared == expected, (name, declared, expected)


# evaluation sized for its work (clipscale.resources.evaluate, clipscale.evaluate.work) -------


def _eval_job(cfg: dict, model: str, attempt: int = 1) -> dict:
    """An evaluation job's resources for one checkpoint of ``model``, as Snakemake evaluates them."""
    from clipscale import config as cs_config

    cfg = cs_config.validate(copy.deepcopy(cfg))
    wildcards = _wildcards(source="ours", model=model, scale="12k", samples="30k", epoch="final")
    got = resources.of(cfg, "evaluate")
    return {k: v(wildcards, attempt=attempt) if callable(v) else v for k, v in got.items()}


def test_an_evaluation_job_is_sized_by_its_sets_and_its_model_and_a_retry_asks_for_more():
    """Walltime and memory grow with the images of the configured sets and with the model; the
    second attempt (after a TIMEOUT) asks for more time than the first; the sbatch line asks for
    the GPU per node (--gres), the workers' CPUs, and that time and memory."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["evaluate"].update({"gpus": 1, "workers": 3, "threads": 2})
    small = _eval_job(cfg, "vit-xs")
    call = sbatch_command(small)
    assert "--gres=gpu:1" in call and "--cpus-per-task=5" in call, call
    assert "--gpus" not in call and "--ntasks-per-gpu" not in call, call
    assert f"-t {small['runtime']}" in call and f"--mem {small['mem_mb']}" in call, call

    # the paper's ImageNet with its full linear probe: 1.3M images more
    more = copy.deepcopy(cfg)
    more["downstream"]["imagenet1k"] = {"path": "data/wds/imagenet1k", "tasks": ["zeroshot_classification",
                                                                                 "linear_probe"]}
    big_sets = _eval_job(more, "vit-xs")
    assert big_sets["runtime"] > small["runtime"] and big_sets["mem_mb"] > small["mem_mb"], (small, big_sets)
    more["models"]["ViT-L-14"] = {"label": "ViT-L/14"}
    big_model = _eval_job(more, "ViT-L-14")
    assert big_model["runtime"] > big_sets["runtime"] and big_model["mem_mb"] > big_sets["mem_mb"]
    again = _eval_job(more, "ViT-L-14", attempt=2)
    assert again["runtime"] >= 2 * big_model["runtime"] and again["mem_mb"] > big_model["mem_mb"]
    # a user's own set: its size from the config, else ImageNet's (the fallback, never too short)
    own = copy.deepcopy(cfg)
    own["downstream"]["mine"] = {"path": "data/wds/mine", "tasks": ["zeroshot_classification"], "size": 200_000}
    assert _eval_job(own, "ViT-B-32")["runtime"] > _eval_job(cfg, "ViT-B-32")["runtime"]
    from clipscale.evaluate import work

    assert work.set_size(own, "mine").test == 200_000
    own["downstream"]["mine"].pop("size")
    assert work.set_size(own, "mine") == work.FALLBACK


def test_the_sizes_of_the_worlds_sets_are_those_it_writes(small_world):
    """clipscale.evaluate.work counts the embedded world's splits from its spec: the counts
    equal the samples the world generator writes."""
    import tarfile

    from conftest import SMALL_WORLD

    from clipscale import world
    from clipscale.evaluate import work

    cfg = {"seed": SMALL_WORLD.seed, "world": {k: getattr(SMALL_WORLD, k) for k in (
        "pool_size", "shard_size", "image_size", "test_per_class", "train_per_class", "retrieval_size")},
        "downstream": {name: {"tasks": ["zeroshot_classification"]} for name in world.DOWNSTREAM_SETS}}
    for name in world.DOWNSTREAM_SETS:
        size = work.set_size(cfg, name)
        for split, expected in (("test", size.test), ("train", size.train)):
            tars = sorted((small_world / "downstream" / name / split).glob("*.tar"))
            keys = {m.name.split(".")[0] for t in tars for m in tarfile.open(t).getmembers()}
            assert len(keys) == expected, (name, split, len(keys), expected)


def test_the_evaluation_reads_images_with_the_configured_workers():
    """evaluate.workers reaches every DataLoader the evaluation builds for clip_benchmark."""
    import torch

    from clipscale.evaluate import benchmark, job

    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["evaluate"]["workers"] = 3
    settings = job.set_settings(cfg, "shapes")
    assert settings.workers == 3
    loader = benchmark._loader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), 2, settings.workers, wds=False)
    assert loader.num_workers == 3


def test_the_papers_evaluation_jobs_ask_for_a_gpu_and_time_by_their_model(tmp_path):
    """A dry run of config/paper.yaml through the Slurm profile: every evaluation job asks for
    one GPU per node, 12 CPUs (4 threads, 8 data-loading workers), and a walltime and memory
    that grow with the model (ViT-B/32 < ViT-L/14 < ViT-g/14), hours for a ViT-L/14 where the
    schema's default gave 30 minutes."""
    from clipscale import config as cs_config
    from clipscale import standin

    cfg = cs_config.validate(yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    overrides = standin.write(cfg, tmp_path)
    out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-n", "--forceall", "--profile",
                          str(PROFILE), "--configfile", "config/paper.yaml", str(overrides)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    by_model: dict[str, dict] = {}
    for m in re.finditer(r"^(?:local)?rule evaluate:\n((?:[ \t]+.*\n?)*)", out.stdout, re.M):
        items = dict(i.split("=", 1) for i in re.search(r"^\s+resources: (.*)$", m.group(1), re.M).group(1)
                     .split(", ") if "=" in i)
        model = re.search(r"^\s+wildcards: .*model=([^,\s]+)", m.group(1), re.M).group(1)
        by_model[model] = {k: _value(v) for k, v in items.items()}
    assert {"ViT-B-32", "ViT-L-14", "ViT-g-14"} <= set(by_model), sorted(by_model)
    for model, job in by_model.items():
        assert job["gres"] == "gpu:1" and job["cpus_per_task"] == 12 and "gpu" not in job, (model, job)
    b, l, g = (by_model[m] for m in ("ViT-B-32", "ViT-L-14", "ViT-g-14"))
    assert b["runtime"] < l["runtime"] < g["runtime"] and b["mem_mb"] < l["mem_mb"] < g["mem_mb"]
    assert l["runtime"] >= 120 and l["mem_mb"] >= 16000, l
