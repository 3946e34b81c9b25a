"""Adapter: rules dedup_embed_pool / dedup_embed_downstream -> clipscale.dedup.embed_shards."""
import json
from pathlib import Path

from clipscale import dedup
from clipscale.evaluate.benchmark import resolve_device
from clipscale.logs import exit_now, job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake injects it)
    sm = snakemake  # noqa: F821
    checkpoint = sm.input.encoder
    if Path(checkpoint).name == "run.json":  # one of our runs: its final checkpoint
        checkpoint = json.loads(Path(checkpoint).read_text())["final_checkpoint"]
    emb = sm.config["dedup"]["embedding"]
    encoder = dedup.load_encoder(sm.config, sm.params.encoder["model"], checkpoint, resolve_device(emb["device"]))
    if sm.rule == "dedup_embed_downstream":
        tars, name = dedup.downstream_test_shards(sm.params.dataset_dir, "test"), sm.wildcards.dataset
    else:
        tars, name = sm.params.shards, sm.wildcards.group
    dedup.embed_shards(encoder, tars, sm.output[0], name, batch_size=emb["batch_size"])
exit_now()  # its files are written and closed: skip tearing down torch (about 2 s a job)
