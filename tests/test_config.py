import copy
import io
import re
import tarfile
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from clipscale import checks, config, grid
from clipscale.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
CI_CONFIG = REPO / "tests" / "data" / "ci.yaml"
RELEASED = "Model-XS_Data-3k_Samples-2k_lr-2e-3_bs-256.pt"


def base():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = checks.load(REPO / "config" / name)
    assert grid.runs(cfg)


def test_defaults_are_filled():
    cfg = base()
    del cfg["dedup"]
    cfg = config.validate(cfg)  # the bottom layer: the schema, its defaults
    assert cfg["dedup"]["radius"] == 4
    assert cfg["train"]["checkpoints"] == 4


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["train"].update(colour=1), "train: Additional properties are not allowed"),
        (lambda c: c["train"].update(precision="fp8"), "train.precision"),
        (lambda c: c.update(seed=-1), "seed"),
        (lambda c: c["grid"].update(models=["nope"]), "grid.models: 'nope' is not defined"),
        (lambda c: c["grid"].update(scales=["huge"]), "grid.scales: 'huge' is not defined"),
        (lambda c: c["grid"].update(samples_seen=["12x"]), "grid.samples_seen"),
        (lambda c: c["scales"].update({"48k": 10**9}), "scales.48k"),
        (lambda c: c["downstream"].update(imagenet={"tasks": ["zeroshot_classification"]}),
         "downstream.imagenet: no path given"),
        (lambda c: c["downstream"]["shapes"].update(tasks=["zeroshot"]), "downstream.shapes.tasks"),
        (lambda c: c["train"].update(overrides=[{"model": "vit-xs", "lrr": 1}]),
         "train.overrides[0]: unknown keys ['lrr']"),
        (lambda c: c["train"].update(overrides=[{"model": "vit-xs", "batch_size": "big"}]),
         "train.overrides[0].batch_size: 'big' is not of type 'integer'"),
        # a run label "0"
        (lambda c: c["grid"].update(samples_seen=["0k", "10k"]), "grid.samples_seen: '0k' is 0 samples"),
        # two entries naming one count: the DAG would have half the runs check-config counts
        (lambda c: c["grid"].update(samples_seen=["2k", 2000]),
         "grid.samples_seen: '2k' and 2000 name the same count"),
        # fewer samples per checkpoint than one global batch (open_clip_train cannot run it)
        # a comparison of runs of a schedule the grid does not run
        (lambda c: c["grid"].update(schedules=["cosine"]),
         "fit.comparisons[1].a.source: 'ours-cooldown' are the const-cooldown runs, and grid.schedules "
         "['cosine'] makes none (its runs: 'ours')"),
        (lambda c: c["grid"].update(samples_seen=[512], schedules=["cosine", "const-cooldown"]),
         "grid.samples_seen: 512: vit-xs/3k/512 has 128 samples per checkpoint (512 / train.checkpoints 4), "
         "less than one global batch of 256 (train.batch_size 256 x train.nproc 1 x train.nodes 1 x train.accum_freq 1)"),
        (lambda c: (c["train"].update(nproc=4, nodes=3), c["grid"].update(schedules=["cosine", "const-cooldown"])), "one global batch of 3072 (train.batch_size 256 x "
                                                        "train.nproc 4 x train.nodes 3 x train.accum_freq 1)"),
        # ... with the per-run overrides applied
        (lambda c: (c["train"].update(overrides=[{"model": "vit-m", "batch_size": 4096}]),
                    c["grid"].update(schedules=["cosine", "const-cooldown"])),
         "grid.samples_seen: 10k: vit-m/3k/10k has 2500 samples per checkpoint"),
        (lambda c: c["grid"].update(exclude=[{"model": "vit-xl"}]),
         "grid.exclude[0].model: 'vit-xl' is not defined under models"),
        (lambda c: c["grid"].update(exclude=[{"scale": "6k"}]),
         "grid.exclude[0].scale: '6k' is not defined under scales"),
        (lambda c: c["grid"].update(exclude=[{"samples_seen": "9x"}]), "grid.exclude[0].samples_seen: not a count"),
        (lambda c: c["fit"].update(predictions=[{"model": "ViT-H/14", "samples_seen": "68B"},
                                                {"model": "vit-xl", "samples_seen": "1M"}]),
         "fit.predictions[1].model: 'vit-xl' is neither a model of the config nor of the paper's Table 25"),
        # a released checkpoint whose Model token names no model
        (lambda c: c["evaluate"].update(released={"files": ["Model-QQ-9_Data-3k_Samples-2k_lr-2e-3_bs-256.pt"]}),
         "evaluate.released.files[0]: released checkpoint Model-QQ-9_"),
        (lambda c: c["evaluate"].update(released={"models": {"XS": "vit-xl"}}),
         "evaluate.released.models.XS: 'vit-xl' is neither a model of the config"),
        # removing the matches of a mode that is not matched
        (lambda c: c["dedup"].update(modes=["phash", "mirror"], remove_duplicates=["phash", "trim"]),
         "dedup.remove_duplicates: modes ['trim'] are not in dedup.modes ['phash', 'mirror']"),
        (lambda c: c["dedup"].update(modes=["mirror"]), "dedup.modes"),  # the paper's phash always
        # downstream.<set>.group: a name or a list of names
        (lambda c: c["downstream"]["colours"].update(group=5),
         "downstream.colours.group: 5 is not of type 'string', 'array'"),
        (lambda c: c["downstream"]["colours"].update(group=["vtab+", 7]),
         "downstream.colours.group.1: 7 is not of type 'string'"),
        (lambda c: c["downstream"]["colours"].update(group=[]), "downstream.colours.group: [] should be non-empty"),
        (lambda c: c["downstream"]["colours"].update(group=["vtab+", "vtab+"]),
         "downstream.colours.group: ['vtab+', 'vtab+'] has non-unique elements"),
        (lambda c: c["downstream"]["colours"].update(group=["vtab+", "shapes"]),
         "downstream.colours.group: 'shapes' is also a downstream set's name"),
        # names that collide: one label for two models, a name that is no folder of its own,
        # two scales of one size
        (lambda c: c["models"]["vit-s"].update(label="ViT-XS"),
         "models.vit-s.label: 'ViT-XS' is also models.vit-xs's label (or name): figures and the "
         "results table would merge the two models"),
        (lambda c: c["scales"].update({"..": 6000}), "scales: '..' cannot name a folder"),
        (lambda c: c["downstream"].update({"..": {"tasks": ["zeroshot_classification"]}}),
         "downstream: '..' cannot name a folder"),
        (lambda c: c["models"].update({".": c["models"]["vit-s"] | {"label": "dot"}}), "models: '.' cannot name a folder"),
        (lambda c: c["scales"].update({"3000": 3000}), "scales.3000: 3000 samples, as scales.3k: the same subset twice"),
        # model definitions against open_clip's CLIP, CLIPVisionCfg and CLIPTextCfg
        (lambda c: c["models"]["vit-xs"]["open_clip"]["vision_cfg"].update(layers="two"),
         "models.vit-xs.open_clip.vision_cfg.layers: 'two' is not of open_clip's type "
         "Union[Tuple[int, int, int, int], int] (CLIPVisionCfg.layers)"),
        (lambda c: c["models"]["vit-xs"]["open_clip"]["vision_cfg"].update(layerz=3),
         "models.vit-xs.open_clip.vision_cfg: unknown key 'layerz' (open_clip's CLIPVisionCfg has no such "
         "field; did you mean 'layers'?)"),
        (lambda c: c["models"]["vit-s"]["open_clip"]["text_cfg"].update(heads=2.5),
         "models.vit-s.open_clip.text_cfg.heads: 2.5 is not of open_clip's type int (CLIPTextCfg.heads)"),
        (lambda c: c["models"]["vit-s"]["open_clip"]["vision_cfg"].update(image_size=[32, 32, 3]),
         "models.vit-s.open_clip.vision_cfg.image_size: [32, 32, 3] is not of open_clip's type"),
        (lambda c: c["models"]["vit-m"]["open_clip"].update(embed_dims=c["models"]["vit-m"]["open_clip"].pop("embed_dim")),
         "models.vit-m.open_clip: unknown key 'embed_dims' (open_clip's CLIP has no such argument; did you "
         "mean 'embed_dim'?)"),
        (lambda c: c["models"]["vit-m"]["open_clip"].pop("embed_dim"),
         "models.vit-m.open_clip: embed_dim missing (open_clip's CLIP requires it)"),
        (lambda c: c["models"]["vit-m"]["open_clip"].update(text_cfg=16),
         "models.vit-m.open_clip.text_cfg: 16 is not a mapping (open_clip's CLIPTextCfg)"),
        # selectors that select nothing
        (lambda c: c["finetune"].update(enabled=True, runs={"models": ["vit-zz"]}),
         "finetune.runs.models: 'vit-zz' is not in grid.models ['vit-xs', 'vit-s', 'vit-m']: it selects no run"),
        (lambda c: c["finetune"].update(enabled=True, runs={"samples_seen": ["20k"]}),
         "finetune.runs.samples_seen: '20k' is not in grid.samples_seen"),
        (lambda c: (c["finetune"].update(enabled=True, runs={"scales": ["3k"]}),
                    c["grid"].update(exclude=[{"scale": "3k"}])),
         "finetune.runs: {'scales': ['3k']} selects none of the grid's runs"),
        (lambda c: c["grid"].update(exclude=[{"samples_seen": "20k"}]),
         "grid.exclude[0].samples_seen: '20k' is not in grid.samples_seen ['10k', '30k', '90k']: the entry "
         "leaves out no run"),
        (lambda c: (c["grid"].update(models=["vit-xs", "vit-s"], exclude=[{"model": "vit-m"}])),
         "grid.exclude[0].model: 'vit-m' is not in grid.models ['vit-xs', 'vit-s']"),
        (lambda c: c["grid"].update(schedules=["cosine"], exclude=[{"schedule": "const-cooldown"}]),
         "grid.exclude[0].schedule: 'const-cooldown' is not in grid.schedules ['cosine']"),
        # the main set: named (group main), one, shown zero-shot
        (lambda c: c["downstream"]["colours"].update(group=["vtab+", "main"]),
         "downstream: shapes, colours are all in group 'main': the main set"),
        (lambda c: (c["downstream"]["shapes"].pop("group"), c["downstream"]["world_captions"].update(group="main")),
         "downstream.world_captions.group: 'main': the main set is shown zero-shot"),
        (lambda c: c["downstream"]["shapes"].pop("group"),
         "downstream: no set is in group 'main': the bottleneck figures show the main set; put one of "
         "['colours', 'counts', 'shapes', 'shapes_shifted'] in it"),
    ],
)
def test_bad_config_is_rejected_with_the_key(edit, message):
    cfg = base()
    edit(cfg)
    with pytest.raises(config.ConfigError) as err:
        checks.validate(cfg, source="my.yaml")
    assert "my.yaml" in str(err.value)
    assert message in str(err.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- 1\n")
    with pytest.raises(config.ConfigError, match="must hold a mapping"):
        config.load(bad)


def _twice(tmp_path: Path, source: Path, key: str, where: str) -> tuple[Path, str]:
    """``source`` with the line of ``key`` (its first line starting so) given again just below it
    with another value (YAML loaders keep the last one): the file, and the problem naming the
    dotted key ``where`` and both lines."""
    lines = source.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(key)) + 1
    lines.insert(at, f"{key}7\n")
    path = tmp_path / "twice.yaml"
    path.write_text("".join(lines))
    return path, f"{where}: given twice (lines {at} and {at + 1}; YAML would keep the last silently)"


def test_a_key_given_twice_is_refused(tmp_path, capsys):
    path, message = _twice(tmp_path, REPO / "config" / "config.yaml", "  lr: ", "train.lr")
    assert cli_main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert config.duplicate_keys("a: {b: 1, c: 2, b: 3}\nl:\n  - {x: 1}\n  - {x: 1, x: 2}\n") == [
        "a.b: given twice (lines 1 and 1; YAML would keep the last silently)",
        "l[1].x: given twice (lines 4 and 4; YAML would keep the last silently)"]


def test_dry_run_refuses_a_key_given_twice(tmp_path):
    """Snakemake reads --configfile with its own loader (the last key wins): the Snakefile reads
    each config file again with clipscale's."""
    path, message = _twice(tmp_path, CI_CONFIG, "seed: ", "seed")
    work = tmp_path / "work"
    proc = dry_run(work, path)
    assert proc.returncode != 0
    assert message in proc.stdout and str(path) in proc.stdout
    assert not (work / "results").exists()


def test_check_config_command(tmp_path, capsys):
    assert cli_main(["check-config", str(REPO / "config" / "config.yaml")]) == 0
    cfg = base()
    cfg["train"]["lr"] = -1
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert cli_main(["check-config", str(bad)]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_shipped_configs_have_no_samples_below_a_global_batch():
    for name in ("config.yaml", "paper.yaml"):
        cfg = checks.load(REPO / "config" / name)
        for run in grid.runs(cfg):
            hp = grid.hparams(cfg, run)
            assert hp["train_num_samples"] >= hp["global_batch_size"], run.name


# configured paths (checked by check-config and the Snakefile, before any job) ------------------


def _tar(path: Path, members: int = 1) -> None:
    """A tar shard of ``members`` samples (their content does not matter to the checks)."""
    with tarfile.open(path, "w") as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"{i:06d}.cls")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"0"))


def _wds(root: Path, *, classification: bool = True, train: bool = False, n: int = 1) -> Path:
    """A downstream set in clip_benchmark's webdataset layout (a sample per shard)."""
    for split in ("test", "train") if train else ("test",):
        (root / split).mkdir(parents=True)
        (root / split / "nshards.txt").write_text(f"{n}\n")
        for i in range(n):
            _tar(root / split / f"{i}.tar")
    if classification:
        (root / "classnames.txt").write_text("cat\ndog\n")
        (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
        (root / "dataset_type.txt").write_text("classification\n")
    else:
        (root / "dataset_type.txt").write_text("retrieval\n")
    return root


def _user_config(root: Path, relative: bool = False) -> dict:
    """A config on a user's pool and downstream sets under ``root`` (paths relative to it when
    ``relative``), with one released checkpoint."""
    (root / "pool").mkdir()
    (root / "pool" / "00000.tar").write_bytes(b"")
    _wds(root / "wds" / "imagenet1k", train=True)
    _wds(root / "wds" / "mscoco_captions", classification=False)
    (root / "ckpts").mkdir()
    (root / "ckpts" / RELEASED).write_bytes(b"")
    where = (lambda p: p) if relative else (lambda p: str(root / p))
    cfg = base()
    cfg["pool"] = {"source": where("pool"), "name": "LAION"}
    cfg["downstream"] = {
        "imagenet1k": {"path": where("wds/imagenet1k"), "tasks": ["zeroshot_classification", "linear_probe"]},
        "mscoco_captions": {"path": where("wds/mscoco_captions"), "tasks": ["zeroshot_retrieval"]},
    }
    cfg["evaluate"]["released"] = {"dir": where("ckpts"), "files": [RELEASED], "models": {"XS": "vit-xs"}}
    return cfg


def _rm(path: Path) -> None:
    path.unlink() if path.is_file() else __import__("shutil").rmtree(path)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: _rm(r / "pool"), "pool.source: {r}/pool does not exist"),
    (lambda r: _rm(r / "pool" / "00000.tar"), "pool.source: {r}/pool has no .tar shards"),
    (lambda r: (_rm(r / "pool"), (r / "pool").write_text("")), "pool.source: {r}/pool is not a directory"),
    (lambda r: _rm(r / "wds" / "imagenet1k"), "downstream.imagenet1k.path: {r}/wds/imagenet1k does not exist"),
    (lambda r: _rm(r / "wds" / "imagenet1k" / "test"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has no test/ split with .tar shards"),
    (lambda r: _rm(r / "wds" / "mscoco_captions" / "test" / "0.tar"),
     "downstream.mscoco_captions.path: {r}/wds/mscoco_captions has no test/ split with .tar shards"),
    (lambda r: _rm(r / "wds" / "imagenet1k" / "train"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has no train/ split with .tar shards (linear_probe needs it)"),
    (lambda r: _rm(r / "wds" / "imagenet1k" / "test" / "nshards.txt"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has no test/nshards.txt"),
    (lambda r: (r / "wds" / "imagenet1k" / "test" / "nshards.txt").write_text("3\n"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k: test/nshards.txt says 3 shards, test/2.tar is missing"),
    (lambda r: (r / "wds" / "imagenet1k" / "train" / "nshards.txt").write_text("many\n"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k: train/nshards.txt does not hold a number of shards"),
    (lambda r: _rm(r / "wds" / "imagenet1k" / "classnames.txt"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has no classnames.txt (zeroshot_classification needs it)"),
    (lambda r: _rm(r / "wds" / "imagenet1k" / "zeroshot_classification_templates.txt"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has no zeroshot_classification_templates.txt"),
    (lambda r: _rm(r / "wds" / "mscoco_captions" / "dataset_type.txt"),
     "downstream.mscoco_captions.path: {r}/wds/mscoco_captions is not a retrieval set (zeroshot_retrieval "
     "needs dataset_type.txt saying retrieval)"),
    (lambda r: (r / "wds" / "imagenet1k" / "dataset_type.txt").write_text("retrieval\n"),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k is a retrieval set (dataset_type.txt): "
     "no zeroshot_classification"),
    # an empty split (tar shards without a sample, or of 0 bytes): nothing to evaluate nor to look for
    (lambda r: _tar(r / "wds" / "imagenet1k" / "test" / "0.tar", members=0),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has an empty test/ split (its .tar shards hold no sample)"),
    (lambda r: (r / "wds" / "imagenet1k" / "train" / "0.tar").write_bytes(b""),
     "downstream.imagenet1k.path: {r}/wds/imagenet1k has an empty train/ split (its .tar shards hold no "
     "sample) (linear_probe needs it)"),
    (lambda r: _rm(r / "ckpts" / RELEASED), "evaluate.released.files[0]: {r}/ckpts/" + RELEASED + " does not exist"),
    (lambda r: _rm(r / "ckpts"), "evaluate.released.dir: {r}/ckpts does not exist"),
])
def test_configured_paths_are_checked(tmp_path, breakage, message):
    cfg = _user_config(tmp_path)
    checks.validate(copy.deepcopy(cfg), check_paths=True)
    breakage(tmp_path)
    checks.validate(copy.deepcopy(cfg))  # without check_paths: the filesystem is not read
    with pytest.raises(config.ConfigError) as err:
        checks.validate(cfg, source="my.yaml", check_paths=True)
    assert "my.yaml" in str(err.value)
    assert message.format(r=tmp_path) in str(err.value)


def test_released_dir_without_files_is_listed(tmp_path):
    cfg = _user_config(tmp_path)
    del cfg["evaluate"]["released"]["files"]
    checks.validate(copy.deepcopy(cfg), check_paths=True)
    _rm(tmp_path / "ckpts" / RELEASED)
    with pytest.raises(config.ConfigError, match=r"evaluate.released.dir: .*/ckpts has no \*\.pt checkpoint"):
        checks.validate(cfg, check_paths=True)


def test_paths_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    cfg = _user_config(tmp_path, relative=True)
    monkeypatch.chdir(tmp_path)
    checks.validate(copy.deepcopy(cfg), check_paths=True)
    monkeypatch.chdir(tmp_path / "wds")
    with pytest.raises(config.ConfigError) as err:
        checks.validate(cfg, check_paths=True)
    for line in ("pool.source: pool does not exist", "downstream.imagenet1k.path: wds/imagenet1k does not exist",
                 "downstream.mscoco_captions.path: wds/mscoco_captions does not exist",
                 "evaluate.released.dir: ckpts does not exist"):
        assert line in str(err.value)


def test_check_config_checks_the_paths(tmp_path, monkeypatch, capsys):
    """config/paper.yaml names data/... folders: from a folder without them, every one is named."""
    monkeypatch.chdir(tmp_path)
    assert cli_main(["check-config", str(REPO / "config" / "paper.yaml")]) == 2
    err = capsys.readouterr().err
    assert "pool.source: data/laion2b-en does not exist" in err
    assert "downstream.imagenet1k.path: data/wds/imagenet1k does not exist" in err
    assert "downstream.cifar100.path: data/wds/cifar100 does not exist" in err


# check-config and the DAG agree -----------------------------------------------------------------


def dry_run(workdir: Path, configfile: Path) -> subprocess.CompletedProcess:
    """``snakemake -n`` on the repository's Snakefile in a fresh working directory; stdout and
    stderr together in ``.stdout``."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"),
           "-d", str(workdir), "--configfile", str(configfile), "-n"]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def _write(tmp_path: Path, cfg: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _ci_with_exclusions() -> dict:
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["grid"]["exclude"] = [{"model": "vit-s", "scale": "1k"}, {"samples_seen": 4000, "scale": "3k"}]
    return cfg


@pytest.mark.parametrize("make", [lambda: REPO / "config" / "config.yaml", lambda: CI_CONFIG,
                                  lambda: _ci_with_exclusions()], ids=["config", "ci", "exclusions"])
def test_check_config_counts_the_train_jobs_of_the_dag(tmp_path, capsys, make):
    made = make()
    path = made if isinstance(made, Path) else _write(tmp_path, made)
    assert cli_main(["check-config", str(path)]) == 0
    reported = int(re.search(r"valid \((\d+) training runs", capsys.readouterr().out).group(1))
    work = tmp_path / "work"
    proc = dry_run(work, path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    jobs = re.search(r"^train\s+(\d+)$", proc.stdout, re.M)
    assert jobs and int(jobs.group(1)) == reported
    if isinstance(made, dict):
        assert reported == 4  # 8 runs less vit-s/1k/* (2) less */3k/4k (2)


def _ci(edit) -> dict:
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    edit(cfg)
    return cfg


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["grid"].update(samples_seen=["0k", "2k"]), "grid.samples_seen: '0k' is 0 samples"),
    (lambda c: c["grid"].update(samples_seen=["2k", 2000]), "grid.samples_seen: '2k' and 2000"),
    (lambda c: c["grid"].update(samples_seen=[200]), "grid.samples_seen: 200: vit-xs/1k/200"),
    (lambda c: c["fit"].update(predictions=[{"model": "vit-xl", "samples_seen": "1M"}]),
     "fit.predictions[0].model: 'vit-xl'"),
    (lambda c: c["grid"].update(exclude=[{"model": "vit-xl"}]), "grid.exclude[0].model: 'vit-xl'"),
    (lambda c: c["evaluate"].update(released={"files": ["Model-QQ-9_Data-3k_Samples-2k_lr-2e-3_bs-256.pt"]}),
     "evaluate.released.files[0]: released checkpoint Model-QQ-9_"),
    (lambda c: c["downstream"].update(imagenet1k={"path": "wds/imagenet1k", "tasks": ["zeroshot_classification"]}),
     "downstream.imagenet1k.path: wds/imagenet1k does not exist"),
], ids=["zero", "same-count", "below-batch", "prediction", "exclude", "released", "missing-set"])
def test_dry_run_stops_on_a_bad_config_before_any_job(tmp_path, edit, key):
    path = _write(tmp_path, _ci(edit))
    work = tmp_path / "work"
    proc = dry_run(work, path)
    assert proc.returncode != 0
    assert key in proc.stdout
    assert "Job stats" not in proc.stdout
    assert not (work / "results").exists()


# what reruns: Snakemake's params trigger compares the repr of each job's params ------------------


def test_a_label_is_not_what_a_run_trains():
    """A label names a model in figures and tables: changing it leaves the params of every training
    job and model profile as they were (no rerun); the model's definition does not."""
    from clipscale import shaping

    cfg = checks.validate(base())
    relabelled = copy.deepcopy(cfg)
    relabelled["models"]["vit-xs"]["label"] = "ViT-Tiny"
    checks.validate(relabelled)
    runs = grid.runs(cfg)
    assert all(repr(shaping.train(relabelled, r)) == repr(shaping.train(cfg, r)) for r in runs)
    assert repr(shaping.model(relabelled, "vit-xs")) == repr(shaping.model(cfg, "vit-xs"))
    wider = copy.deepcopy(cfg)
    wider["models"]["vit-xs"]["open_clip"]["vision_cfg"]["width"] = 48
    assert {r.model for r in runs if shaping.train(wider, r) != shaping.train(cfg, r)} == {"vit-xs"}
    assert shaping.model(wider, "vit-xs") != shaping.model(cfg, "vit-xs")


def test_reordered_sets_rerun_no_evaluation_and_keep_the_main_set():
    """The sets' order is the figures' panel order only: every evaluation's params are the same,
    and both bottleneck figures show the main set (group main), not the first one."""
    from clipscale import figures, shaping

    cfg = checks.validate(base())
    reordered = copy.deepcopy(cfg)
    reordered["downstream"] = dict(reversed(cfg["downstream"].items()))
    checks.validate(reordered)
    for source in ("ours", "released"):
        assert (repr(shaping.evaluations(reordered, source, "vit-xs", "3k"))
                == repr(shaping.evaluations(cfg, source, "vit-xs", "3k")))
    for c in (cfg, reordered):
        specs = {s.name: s for s in figures.figure_specs(c)}
        assert specs["data_bottleneck_ours"].datasets == specs["samples_bottleneck_ours"].datasets == ["shapes"]
    # one zero-shot classification set needs no group: it is the main one
    only = copy.deepcopy(cfg)
    only["downstream"] = {"colours": {"tasks": ["zeroshot_classification"]},
                          "world_captions": {"tasks": ["zeroshot_retrieval"]}}
    only["finetune"]["enabled"] = False
    specs = {s.name: s for s in figures.figure_specs(checks.validate(only))}
    assert specs["data_bottleneck_ours"].datasets == ["colours"]


@pytest.mark.parametrize("text, n", [("24k", 24000), ("3B", 3 * 10**9), ("12.8B", 12_800_000_000),
                                     (500, 500), ("80M", 80 * 10**6)])
def test_counts_round_trip(text, n):
    assert config.parse_count(text) == n
    assert config.parse_count(config.format_count(n)) == n


def test_grid_and_overrides():
    cfg = checks.validate(base())
    runs = grid.runs(cfg)
    assert len(runs) == 27 and len(set(runs)) == 27
    cfg2 = copy.deepcopy(cfg)
    cfg2["grid"]["exclude"] = [{"model": "vit-m", "scale": "3k"}]
    cfg2["train"]["overrides"] = [{"model": "vit-xs", "lr": 0.5}, {"samples_seen": "90k", "batch_size": 64}]
    cfg2 = checks.validate(cfg2)
    runs2 = grid.runs(cfg2)
    assert len(runs2) == 24
    hp = grid.hparams(cfg2, grid.Run("vit-xs", "3k", 90000))
    assert hp["lr"] == 0.5 and hp["batch_size"] == 64
    # open_clip draws whole global batches per virtual epoch: 22500 -> 352 batches of 64
    assert (hp["epochs"], hp["train_num_samples"]) == (4, 22500)
    assert hp["samples_seen_exact"] == 4 * 352 * 64
    assert grid.hparams(cfg2, grid.Run("vit-s", "3k", 10000))["lr"] == cfg["train"]["lr"]


def test_paper_grid_matches_table18():
    cfg = checks.load(REPO / "config" / "paper.yaml")
    runs = grid.runs(cfg)
    assert len(runs) == 29  # the runs of the paper's Table 18
    hp = grid.hparams(cfg, grid.Run("ViT-H-14", "2B", 34 * 10**9))
    assert (hp["batch_size"], hp["lr"], hp["nodes"] * hp["nproc"]) == (96, 0.0005, 824)


def test_a_walltime_warning_outside_the_walltime_is_refused():
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["train"].update(runtime=5, signal_lead_s=300)
    with pytest.raises(config.ConfigError, match=r"train.signal_lead_s: 300 s is not less than .* train.runtime 5 min"):
        checks.validate(cfg, "t.yaml")
    cfg["train"]["signal_lead_s"] = 240
    checks.validate(cfg, "t.yaml")


def test_paper_downstream_is_the_papers_suite_under_clip_benchmarks_names():
    """config/paper.yaml: the 35 VTAB+ tasks of Table 17, the five ImageNet robustness sets of
    Table 20, COCO and Flickr30k, Table 5's linear-probe sets, the eight fine-tuning tasks; every
    one a clip_benchmark webdataset (wds/<name of its vtab+ or retrieval collection>)."""
    from clip_benchmark.datasets.builder import dataset_collection

    from clipscale import reference, table
    from clipscale.evaluate import benchmark_name

    cfg = checks.load(REPO / "config" / "paper.yaml")
    down, groups = cfg["downstream"], table.groups_of(cfg)
    assert sorted(groups["vtab+"]) == sorted(reference.VTAB_PLUS_DATASETS.values())
    assert len(groups["vtab+"]) == 35
    assert sorted(groups["imagenet_robustness"]) == sorted(["imagenetv2", "imagenet_sketch", "imagenet-a",
                                                           "imagenet-r", "objectnet"])
    assert sorted(groups["vtab"]) == sorted(reference.VTAB_LINEAR_PROBE_DATASETS)
    assert sorted(groups["finetune_tasks"]) == sorted(set(reference.FINETUNE_DATASETS.values()) - {"imagenet1k"})
    assert sorted(groups["retrieval"]) == ["flickr30k", "mscoco_captions"]
    assert len(down) == 37  # 35 + 2 retrieval sets: the others are among the 35
    known = set(dataset_collection["vtab+"]) - {"voc2007_multilabel"} | {"mscoco_captions", "flickr30k"}
    names = {benchmark_name(cfg, name) for name in down}
    assert {n.removeprefix("wds/") for n in names} == known and all(n.startswith("wds/") for n in names)
    for name, spec in down.items():
        assert spec["path"] == f"data/wds/{name}"
        assert benchmark_name(cfg, name).removeprefix("wds/").removeprefix("vtab/") == name
        want = {"zeroshot_retrieval"} if name in groups["retrieval"] else {"zeroshot_classification"}
        if name in groups["vtab"] or name in ("imagenet1k", "cifar100"):  # Table 5
            want.add("linear_probe")
        assert set(spec["tasks"]) == want, name
