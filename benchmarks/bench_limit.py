"""How far the embedded default's training is from this machine's limit (issue 33), in one run.

    .venv/bin/python benchmarks/bench_limit.py              # ~3 min on a loaded 2-core machine
    .venv/bin/python benchmarks/bench_limit.py --quick      # fewer repeats and samples
    .venv/bin/python benchmarks/bench_limit.py --no-eval-job

Everything on one core (torch threads 1), timed in CPU seconds of the measuring thread or process
(time.thread_time / process_time), not wall time: on a machine shared with other jobs wall times
stretch with the load while CPU time stays near the work's own cost (it still grows somewhat
under load: caches and memory bandwidth are shared). Figures from a loaded machine are lower
bounds of the rates.

1. The core's matmul rate (GFLOP/s = 2 M K N / CPU-s, fp32) at each model's shapes: its image
   tower's MLP and QKV products for a batch (M = batch x tokens, K = width, N = mlp width or
   3 x width), its text tower's MLP, and 1024^3 as the reference.
2. Each model's training rate: open_clip's model, ClipLoss and AdamW on synthetic tensors (no
   data path), batches of train.batch_size: samples/s and FLOP/s (6 x the measured forward GMAC
   per sample, clipscale.models.measure_gmac), and the share of the matmul rate at its shapes.
3. The data path per sample, stage by stage, on a small world's shards (clipscale's world
   generator, 32-px images): read (webdataset's tar reader, clipscale.datapath's plain tar reader
   that training uses, and open_clip's shuffle buffer), decode (open_clip's select + pilrgb decode
   + rename, and datapath's direct PIL decode), transform (open_clip's training transform,
   clipscale.augment's FastTrainTransform per sample, and datapath's batch-wise one that training
   uses: crop per sample, ToTensor + Normalize per batch), tokenize (open_clip's SimpleTokenizer,
   and clipscale.augment's CachedTokenizer that training uses), collate (to_tuple + batched); then
   the whole pipeline as open_clip builds it (cut after each group of stages) and as training
   runs it now (datapath's reader and fused stage).
4. Per model: samples/s on one core with the data path in the same process (workers: 0, the
   default) = 1 / (training s/sample + data s/sample): the limit and what stands before it.
5. One evaluation job (workflow/scripts/evaluate.py's body) of a tiny checkpoint on the world's
   sets, in a fresh process, with and without clipscale.evaluate.imports keeping its unused
   imports out: CPU-s (user + sys) of the process, and whether the metrics are equal.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def cpu_of(fn, repeats: int) -> float:
    """The median CPU-s of this thread over ``repeats`` calls of fn()."""
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times)


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    calls = max(1, int(2e9 / (2 * m * k * n)))  # about 2 GFLOP a measure
    torch.mm(a, b, out=out)

    def run():
        for _ in range(calls):
            torch.mm(a, b, out=out)

    return 2 * m * k * n * calls / cpu_of(run, repeats) / 1e9


def model_shapes(spec: dict, batch: int) -> dict[str, tuple[int, int, int]]:
    v, t = spec["vision_cfg"], spec["text_cfg"]
    tokens = (v["image_size"] // v["patch_size"]) ** 2 + 1
    w, tw = v["width"], t["width"]
    return {"image mlp": (batch * tokens, w, int(w * v.get("mlp_ratio", 4))),
            "image qkv": (batch * tokens, w, 3 * w),
            "text mlp": (batch * t["context_length"], tw, int(tw * t.get("mlp_ratio", 4)))}


def train_rate(name: str, batch: int, steps: int) -> float:
    """Samples per CPU-second of open_clip training steps on synthetic tensors."""
    import open_clip
    import torch
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    model = open_clip.create_model(name)
    model.train()
    cfg = open_clip.get_model_config(name)
    size, ctx = cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
    images = torch.randn(batch, 3, size, size)
    texts = torch.randint(1, 49407, (batch, ctx))
    texts[:, -1] = 49407  # an end-of-text token: open_clip pools at the largest id
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

    out = model(images[:1], texts[:1])
    if not isinstance(out, tuple):  # dict output (output_dict=True models)
        def step():
            opt.zero_grad(set_to_none=True)
            o = model(images, texts)
            loss_fn(o["image_features"], o["text_features"], o["logit_scale"]).backward()
            opt.step()
    else:
        def step():
            opt.zero_grad(set_to_none=True)
            img, txt, scale = model(images, texts)[:3]
            loss_fn(img, txt, scale).backward()
            opt.step()
    for _ in range(2):
        step()
    t0 = time.process_time()
    for _ in range(steps):
        step()
    return batch * steps / (time.process_time() - t0)


def make_world(folder: Path, samples: int, shard_size: int) -> Path:
    from clipscale.world import WorldSpec, generate

    if not (folder / "pool").is_dir():
        spec = WorldSpec(seed=0, pool_size=samples, shard_size=shard_size, image_size=32,
                         near_duplicates=20, hard_duplicates=20, test_per_class=8, train_per_class=10,
                         retrieval_size=40)
        generate(spec, folder, progress=False)
    return folder


def data_path(shards: list[str], batch: int, context_length: int, repeats: int) -> tuple[dict, int, float]:
    """CPU-s per sample of each stage of open_clip_train's webdataset pipeline (the stages run
    one after another on lists, each timed alone), the distinct-caption share, and the whole
    pipeline's CPU-s per sample as training runs it (fast transform, cached tokenizer)."""
    import open_clip
    import torch
    import webdataset as wds
    from open_clip_train import data as oct_data

    import webdataset.autodecode as wa

    from clipscale import augment, datapath

    def read():
        return list(wds.tarfile_to_samples()(iter([{"url": s} for s in shards])))

    def shuffle(samples):
        return list(wds.shuffle(500, 100)(iter(samples)))

    def decode(samples):
        chain = [wds.select(oct_data.filter_no_caption_or_no_image), wds.decode("pilrgb"),
                 wds.rename(image="jpg;png;jpeg;webp", text="txt")]
        it = iter(samples)
        for f in chain:
            it = f(it)
        return list(it)

    def read_plain():  # open_clip's reader with clipscale.datapath's tar_file_expander
        original = oct_data.tar_file_expander
        oct_data.tar_file_expander = datapath.tar_file_expander
        try:
            return list(oct_data.tarfile_to_samples_nothrow(iter([{"url": s} for s in shards])))
        finally:
            oct_data.tar_file_expander = original

    def decode_direct(samples):  # clipscale.datapath's per-sample select + decode
        decoder = wa.Decoder([wa.imagehandler("pilrgb")])
        select = oct_data.filter_no_caption_or_no_image
        return [datapath.decode_sample(s, decoder) for s in samples if select(s)]

    samples = read()
    n = len(samples)
    decoded = decode(shuffle(samples))
    images = [s["image"] for s in decoded]
    texts = [s["text"] for s in decoded]
    upstream = open_clip.image_transform(32, is_train=True)
    fast = augment.faster(upstream)
    assert fast is not upstream
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context_length)
    torch.manual_seed(0)
    tensors = [fast(im) for im in images]
    tokens = [tokenizer(t)[0] for t in texts]

    def batchwise():  # clipscale.datapath's transform: draw + crop per sample, the tensors per batch
        out = []
        for k in range(0, len(images) - batch + 1, batch):
            chunk = images[k:k + batch]
            params = [fast.draw(im) for im in chunk]
            out.append(fast.normalize_batch([fast.crop_bytes(im, p) for im, p in zip(chunk, params)]))
        return out

    def collate():
        it = wds.batched(batch, partial=False)(iter(list(zip(tensors, tokens))))
        return list(it)

    def cached_tokenize():  # a fresh cache each time: a training process starts with an empty one
        tok = augment.CachedTokenizer(tokenizer)
        return [tok(t)[0] for t in texts]

    warm = augment.CachedTokenizer(tokenizer)  # as in a training run's later epochs: every caption seen
    for t in texts:
        warm(t)
    stages = {
        "read (tar)": cpu_of(read, repeats),
        "shuffle buffer": cpu_of(lambda: shuffle(samples), repeats),
        "read: datapath's plain tar reader": cpu_of(read_plain, repeats),
        "decode (select, pilrgb, rename)": cpu_of(lambda: decode(samples), repeats),
        "decode: datapath (select, PIL)": cpu_of(lambda: decode_direct(samples), repeats),
        "transform: open_clip's": cpu_of(lambda: [upstream(im) for im in images], repeats),
        "transform: FastTrainTransform": cpu_of(lambda: [fast(im) for im in images], repeats),
        "transform: datapath, per batch": cpu_of(batchwise, repeats),
        "tokenize: SimpleTokenizer": cpu_of(lambda: [tokenizer(t)[0] for t in texts], repeats),
        "tokenize: CachedTokenizer": cpu_of(cached_tokenize, repeats),
        "tokenize: CachedTokenizer, warm": cpu_of(lambda: [warm(t)[0] for t in texts], repeats),
        "collate (batched)": cpu_of(collate, repeats),
    }
    per_sample = {k: v / n for k, v in stages.items()}

    def pipeline(upto: int) -> int:
        tok = augment.CachedTokenizer(tokenizer)
        steps = [wds.SimpleShardList(shards), wds.tarfile_to_samples(), wds.shuffle(500, 100),
                 wds.select(oct_data.filter_no_caption_or_no_image), wds.decode("pilrgb"),
                 wds.rename(image="jpg;png;jpeg;webp", text="txt"),
                 wds.map_dict(image=fast, text=lambda text: tok(text)[0]),
                 wds.to_tuple("image", "text"), wds.batched(batch, partial=False)]
        return sum(1 for _ in wds.DataPipeline(*steps[:upto]))

    # the pipeline as training builds it, cut after each group of steps: the CPU each group adds
    # when the stages run interleaved, sample by sample (more than each stage alone on a list)
    cuts = {"read + shuffle": 3, "+ select, decode": 5, "+ rename": 6, "+ transform, tokenize (map_dict)": 7,
            "+ to_tuple, batched": 9}
    pipe = {}
    for label, upto in cuts.items():
        pipeline(upto)  # warm
        pipe[label] = cpu_of(lambda: pipeline(upto), repeats) / n
    def pipeline_now() -> int:  # clipscale.datapath's reader and fused stage, as training runs it now
        tok = augment.CachedTokenizer(tokenizer)
        steps = [wds.SimpleShardList(shards), oct_data.tarfile_to_samples_nothrow, wds.shuffle(500, 100),
                 wds.select(oct_data.filter_no_caption_or_no_image), wds.decode("pilrgb"),
                 wds.rename(image="jpg;png;jpeg;webp", text="txt"),
                 wds.map_dict(image=fast, text=lambda text: tok(text)[0]),
                 wds.to_tuple("image", "text"), wds.batched(batch, partial=False)]
        loader = wds.WebLoader(wds.DataPipeline(*steps), batch_size=None, shuffle=False, num_workers=0)
        datapath.fuse(loader)
        original = oct_data.tar_file_expander
        oct_data.tar_file_expander = datapath.tar_file_expander
        try:
            return sum(1 for _ in loader)
        finally:
            oct_data.tar_file_expander = original

    pipeline_now()  # warm
    pipe["clipscale.datapath (training now)"] = cpu_of(pipeline_now, repeats) / n
    whole_s = pipe["clipscale.datapath (training now)"]
    pipe["before: open_clip's stages"] = pipe["+ to_tuple, batched"]
    per_sample["_pipeline"] = pipe
    return per_sample, len(set(texts)), whole_s


EVAL_JOB = r"""
import contextlib, json, os, sys, time, yaml
keep = sys.argv[1] == "1"
from clipscale import evaluate
from clipscale.evaluate import imports
from clipscale.logs import exit_now
cfg = yaml.safe_load(open("cfg.yaml"))
ckpt = {"source": "ours", "model": "vit-xs", "scale": "3k", "samples": "2k", "epoch": "2"}
outputs = {k: f"out_{int(keep)}/{k[0]}_{k[1]}.json" for k in evaluate.outputs_of(cfg, ckpt)}
with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
    if keep:
        imports.keep_out(evaluate.unused_imports(cfg, ckpt))
    res = evaluate.evaluate_checkpoint(cfg, ckpt, outputs, threads=1)
print(json.dumps({"modules": len(sys.modules), "metrics": {f"{d} {t}": r["metrics"] for (d, t), r in res.items()}}))
sys.stdout.flush()
exit_now()
"""


def eval_job(world: Path, folder: Path, repeats: int) -> dict:
    """CPU-s of one evaluation job in a fresh process, without and with keep_out."""
    import open_clip
    import torch
    import yaml

    from clipscale import config as config_mod
    from clipscale import models, paths

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["grid"] = {"models": ["vit-xs"], "scales": ["3k"], "samples_seen": ["2k"]}
    cfg["fit"].pop("comparisons", None)
    cfg["train"]["checkpoints"] = 2
    down = world / "downstream"
    cfg["downstream"] = {
        "shapes": {"path": str(down / "shapes"), "tasks": ["zeroshot_classification", "linear_probe"],
                   "group": "main"},
        "colours": {"path": str(down / "colours"), "tasks": ["zeroshot_classification"], "group": "vtab+"},
        "counts": {"path": str(down / "counts"), "tasks": ["zeroshot_classification"], "group": "vtab+"},
        "world_captions": {"path": str(down / "world_captions"), "tasks": ["zeroshot_retrieval"]},
    }
    cfg["evaluate"] = {"device": "cpu", "batch_size": 256, "linear_probe_k": [2, "full"]}
    cfg = config_mod.validate(cfg)
    models.register(cfg)
    rel = Path(paths.fill(paths.RUN_DIR, model="vit-xs", scale="3k", samples="2k"))
    ckpts = {}
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        path = folder / rel / "openclip" / "checkpoints" / f"epoch_{epoch}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": epoch, "name": "bench", "state_dict": open_clip.create_model("vit-xs").state_dict()},
                   path)
        ckpts[str(epoch)] = str(path.relative_to(folder))
    (folder / rel / "run.json").write_text(json.dumps({
        "model": "vit-xs", "scale": "3k", "samples_seen": 2000, "samples_seen_exact": 2000,
        "samples_seen_label": "2k", "data_samples": 3000, "epochs": 2, "train_num_samples": 1000,
        "final_checkpoint": ckpts["2"], "checkpoints": ckpts, "gmac_per_sample": 0.001, "total_gmac": 2.0}))
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cpu = {False: [], True: []}
    out = {}
    for _ in range(repeats):
        for keep in (False, True):  # interleaved: the machine's load drifts
            for f in folder.glob(f"out_{int(keep)}/*.json"):
                f.unlink()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run([sys.executable, "-c", EVAL_JOB, "1" if keep else "0"], cwd=folder, env=env,
                                  capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            cpu[keep].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            out[keep] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"cpu_before": cpu[False], "cpu_after": cpu[True], "modules_before": out[False]["modules"],
            "modules_after": out[True]["modules"], "same_metrics": out[False]["metrics"] == out[True]["metrics"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, steps and samples")
    ap.add_argument("--no-eval-job", action="store_true", help="skip the evaluation job's measure")
    ap.add_argument("--world", help="a world folder to use (made there if absent; default: a temporary one)")
    a = ap.parse_args()

    import logging

    import torch
    import yaml

    from clipscale import models

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" for each model
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    models.register(cfg)
    batch = cfg["train"]["batch_size"]
    repeats = 3 if a.quick else 5
    steps = 3 if a.quick else 8
    load = os.getloadavg()
    print(f"bench_limit {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch "
          f"{torch.__version__}, 1 thread, {os.cpu_count()} cores, load average {load[0]:.1f} "
          f"(CPU seconds, not wall: on a loaded machine the rates are lower bounds)")

    print("\n1. matmul rate, one core, fp32 (GFLOP/s, median of %d)" % repeats)
    ref = matmul_gflops(1024, 1024, 1024, repeats)
    print(f"  {'1024 x 1024 x 1024':<34} {ref:6.1f}")
    at_shapes = {}
    for name, spec in cfg["models"].items():
        rates = []
        for what, (m, k, n) in model_shapes(spec["open_clip"], batch).items():
            r = matmul_gflops(m, k, n, repeats)
            rates.append(r)
            print(f"  {name + ' ' + what:<18} {m:>5} x {k:>3} x {n:>3}  {r:6.1f}")
        at_shapes[name] = statistics.median(rates)

    print(f"\n2. training, synthetic tensors, batch {batch}, {steps} steps (open_clip model, ClipLoss, AdamW)")
    print(f"  {'model':<8} {'GMAC/sample':>11} {'samples/s':>10} {'GFLOP/s':>8} {'of matmul':>9}")
    train = {}
    for name in cfg["models"]:
        gmac = models.measure_gmac(name)["gmac_per_sample"]
        rate = train_rate(name, batch, steps)
        flops = rate * gmac * 6
        train[name] = (gmac, rate)
        print(f"  {name:<8} {gmac:11.4f} {rate:10.0f} {flops:8.2f} {flops / at_shapes[name]:9.0%}")

    samples = 2000 if a.quick else 4000
    with tempfile.TemporaryDirectory(prefix="bench-limit-") as tmp:
        world = make_world(Path(a.world) if a.world else Path(tmp) / "world", samples, 1000)
        shards = sorted(str(p) for p in (world / "pool").glob("*.tar"))
        ctx = next(iter(cfg["models"].values()))["open_clip"]["text_cfg"]["context_length"]
        per_sample, distinct, whole = data_path(shards, batch, ctx, repeats)
        pipe = per_sample.pop("_pipeline")
        print(f"\n3. data path per sample, one core ({len(shards)} shards of the world, {distinct} distinct "
              f"captions of {len(shards) * 1000}; median of {repeats})")
        for stage, s in per_sample.items():
            print(f"  {stage:<34} {s * 1e6:7.1f} us")
        used = ("read: datapath's plain tar reader", "shuffle buffer", "decode: datapath (select, PIL)",
                "transform: datapath, per batch", "tokenize: CachedTokenizer", "collate (batched)")
        upstream = ("read (tar)", "shuffle buffer", "decode (select, pilrgb, rename)", "transform: open_clip's",
                    "tokenize: SimpleTokenizer", "collate (batched)")
        stage_sum = sum(per_sample[k] for k in used)
        print(f"  {'sum, as training runs it':<34} {stage_sum * 1e6:7.1f} us  "
              f"(open_clip's own steps: {sum(per_sample[k] for k in upstream) * 1e6:.1f} us)")
        print("  the pipeline as open_clip builds it (stages interleaved; fast transform, cached tokenizer),"
              " cumulative, then as training runs it now (clipscale.datapath's reader and fused stage):")
        for label, t in pipe.items():
            if label != "before: open_clip's stages":
                print(f"    {label:<36} {t * 1e6:7.1f} us")
        print(f"  {'whole pipeline, as training runs it':<34} {whole * 1e6:7.1f} us  (target of issue 33: 250 us)")

        print("\n4. one core, data read in the training process (train.workers: 0)")
        print(f"  {'model':<8} {'train us':>9} {'data us':>8} {'samples/s':>10} {'GFLOP/s':>8} {'of matmul':>9} "
              f"{'data share':>10}")
        for name, (gmac, rate) in train.items():
            t_train = 1 / rate
            both = 1 / (t_train + whole)
            flops = both * gmac * 6
            print(f"  {name:<8} {t_train * 1e6:9.0f} {whole * 1e6:8.0f} {both:10.0f} {flops:8.2f} "
                  f"{flops / at_shapes[name]:9.0%} {whole / (t_train + whole):10.0%}")

        if not a.no_eval_job:
            reps = 2 if a.quick else 3
            job = eval_job(world, Path(tmp) / "eval", reps)
            b, f = statistics.median(job["cpu_before"]), statistics.median(job["cpu_after"])
            print(f"\n5. one evaluation job of a tiny checkpoint (vit-xs, 4 sets, 5 tasks), fresh process, CPU-s "
                  f"(user + sys, median of {reps})")
            print(f"  all imports            {b:6.2f} s  {job['modules_before']} modules  "
                  f"{' '.join(f'{x:.2f}' for x in job['cpu_before'])}")
            print(f"  unused ones kept out   {f:6.2f} s  {job['modules_after']} modules  "
                  f"{' '.join(f'{x:.2f}' for x in job['cpu_after'])}")
            print(f"  saved {b - f:.2f} CPU-s a job ({(b - f) / b:.0%}); metrics equal: {job['same_metrics']}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
