"""Empty stand-ins for a config's data, so that its DAG can be built before the data is there.

``snakemake -n --configfile config/paper.yaml`` needs the pool's shards (the DAG lists them) and
the downstream sets' folders (the config check looks at their layout). ``make(config, folder)``
writes empty files with the right names and layout under ``folder``, and ``write`` a config file
of overrides that points the config at them (give it after the config: ``--configfile
config/paper.yaml /tmp/standin/standin.yaml``; Snakemake merges them): a dry run, a DAG benchmark
or a test of the Slurm profile then works anywhere. Nothing is ever trained or evaluated on
these: every file is empty.

    clipscale standin --config config/paper.yaml --out /tmp/standin --shards 1000
"""

from __future__ import annotations

from pathlib import Path



def _one_sample_tar(path: Path) -> None:
    """A shard of one sample (a label, no image: the DAG lists and checks shards, reads none)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        data = b"0"
        info = tarfile.TarInfo("s0.cls")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def make(config: dict, folder: str | Path, shards: int = 40) -> dict:
    """Write stand-ins for the configured pool (``shards`` empty NNNNN.tar), every downstream
    set with a path and fine-tuning's own sets (finetune.sets); returns the overrides {"pool":
    ..., "downstream": ..., "finetune": {"sets": ...}} to apply."""
    folder = Path(folder)
    overrides: dict = {}
    pool = dict(config["pool"])
    if pool["source"] != "world":
        pool_dir = folder / "pool"
        pool_dir.mkdir(parents=True, exist_ok=True)
        for i in range(shards):
            (pool_dir / f"{i:05d}.tar").touch()
        overrides["pool"] = {**pool, "source": str(pool_dir)}
    downstream = {}
    for name, spec in config["downstream"].items():
        if "path" not in spec:
            continue
        root = folder / "downstream" / name
        splits = ["test"] + (["train"] if "linear_probe" in spec["tasks"] else [])
        for split in splits:
            (root / split).mkdir(parents=True, exist_ok=True)
            _one_sample_tar(root / split / "0.tar")  # an empty split is refused (config checks)
            (root / split / "nshards.txt").write_text("1\n")
        if "zeroshot_retrieval" in spec["tasks"]:
            (root / "dataset_type.txt").write_text("retrieval\n")
        else:
            (root / "classnames.txt").write_text("a\nb\n")
            (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
        downstream[name] = {**spec, "path": str(root)}
    if downstream:
        overrides["downstream"] = {**config["downstream"], **downstream}
    sets = {}
    for name, spec in ((config.get("finetune") or {}).get("sets") or {}).items():  # fine-tuning's own sets
        root = folder / "finetune" / name
        for split in ("train", "test"):
            (root / split).mkdir(parents=True, exist_ok=True)
            _one_sample_tar(root / split / "0.tar")
        (root / "classnames.txt").write_text("a\nb\n")
        (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
        sets[name] = {**spec, "path": str(root)}
    if sets:
        overrides["finetune"] = {"sets": sets}
    return overrides


def write(config: dict, folder: str | Path, shards: int = 40) -> Path:
    """``make``, then the overrides as a config file (``folder/standin.yaml``) to give after the
    config's own with ``--configfile``; returns its path."""
    import yaml

    out = Path(folder) / "standin.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(make(config, folder, shards), sort_keys=False))
    return out
