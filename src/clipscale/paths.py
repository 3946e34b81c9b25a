"""Where every artifact lives under results/: the one map of the pipeline's outputs.

Rules, scripts and the package take their paths from here; the README's artifact map mirrors it.
Patterns use Snakemake's {wildcard} syntax; ``fill`` formats them.
"""

from __future__ import annotations

RESULTS = "results"

# 1. data ---------------------------------------------------------------------------------------
WORLD = f"{RESULTS}/world"
WORLD_POOL = f"{WORLD}/pool"                       # NNNNN.tar + NNNNN.parquet + NNNNN_stats.json
WORLD_DOWNSTREAM = f"{WORLD}/downstream/{{dataset}}"  # clip_benchmark wds layout
WORLD_DONE = f"{WORLD}/world.json"                 # what was generated, counts, seed
WORLD_DUPLICATES = f"{WORLD}/planted_duplicates.csv"  # ground truth of planted near-duplicates
POOL_INDEX = f"{RESULTS}/data/pool_index.parquet"  # shard, path, n_samples of the pool
SUBSET = f"{RESULTS}/data/subsets/{{scale}}"       # manifest.json + shards/ (links or re-shards)
SUBSET_MANIFEST = f"{SUBSET}/manifest.json"
SUBSET_DEDUP = f"{RESULTS}/data/subsets_dedup/{{scale}}"
SUBSET_DEDUP_MANIFEST = f"{SUBSET_DEDUP}/manifest.json"

# 2. dedup --------------------------------------------------------------------------------------
DEDUP = f"{RESULTS}/dedup"
POOL_HASHES = f"{DEDUP}/hashes/pool/{{group}}.parquet"
DOWNSTREAM_HASHES = f"{DEDUP}/hashes/downstream/{{dataset}}.parquet"
ALL_POOL_HASHES = f"{DEDUP}/pool_hashes.parquet"
HASH_REPORT = f"{DEDUP}/hash_report.json"          # what every hash job read, hashed, skipped
MATCHES = f"{DEDUP}/matches.parquet"
# mode embedding (dedup.modes): image features of the pool (per hash group) and of each test set
POOL_EMBEDDINGS = f"{DEDUP}/embeddings/pool/{{group}}.npz"
DOWNSTREAM_EMBEDDINGS = f"{DEDUP}/embeddings/downstream/{{dataset}}.npz"
EMBEDDING_MATCHES = f"{DEDUP}/embedding_matches.parquet"
OVERLAP_TABLE = f"{DEDUP}/overlap.csv"
CONTACT_SHEET = f"{DEDUP}/contact_sheet.png"
PLANTED_RECALL = f"{DEDUP}/planted_recall.json"

# 3. train --------------------------------------------------------------------------------------
RUN_DIR = f"{RESULTS}/train/{{model}}/{{scale}}/{{samples}}"
RUN_DONE = f"{RUN_DIR}/run.json"                  # written last: final checkpoint, samples, GMAC
RUN_CHECKPOINTS = f"{RUN_DIR}/openclip/checkpoints"  # epoch_N.pt, kept across failures (not an output)
RUN_SEGMENT = f"{RUN_DIR}/segments/epoch_{{epoch}}.json"  # a segment's end (train.segments > 1): its record
MODEL_PROFILE = f"{RESULTS}/models/{{model}}.profile.json"  # measured GMAC per sample, params

# 4. evaluate -----------------------------------------------------------------------------------
EVAL = f"{RESULTS}/eval/{{source}}/{{model}}/{{scale}}/{{samples}}/epoch_{{epoch}}/{{dataset}}/{{task}}.json"
EVAL_FEATURES = f"{RESULTS}/features/{{source}}/{{model}}/{{scale}}/{{samples}}/epoch_{{epoch}}/{{dataset}}"  # linear-probe cache
RESULTS_TABLE = f"{RESULTS}/results/results.parquet"
RESULTS_CSV = f"{RESULTS}/results/results.csv"
RESULTS_LOG = f"{RESULTS}/results/results_log.txt"
PUBLISHED_TABLE = f"{RESULTS}/results/published.parquet"
# fine-tuning (finetune.enabled): one job per (final checkpoint, protocol); state.pt beside the
# result is the job's saved place (kept across failures, not an output)
FINETUNE_DIR = f"{RESULTS}/finetune/{{model}}/{{scale}}/{{samples}}/{{protocol}}"
FINETUNE_RESULT = f"{FINETUNE_DIR}/result.json"
# the fine-tuning table (the results table's columns) and its log: their own, so that the results
# table, our fits and our figures never wait on a fine-tuning job (clipscale.finetune.results)
FINETUNE_TABLE = f"{RESULTS}/results/finetune.parquet"
FINETUNE_CSV = f"{RESULTS}/results/finetune.csv"
FINETUNE_LOG = f"{RESULTS}/results/finetune_log.txt"

# 5. fit ----------------------------------------------------------------------------------------
FIT = f"{RESULTS}/fit"
FIT_COEFFICIENTS = f"{FIT}/coefficients.csv"     # all inputs (published if enabled, ours)
FIT_PREDICTIONS = f"{FIT}/predictions.csv"
FIT_INPUT = f"{FIT}/{{input}}"                      # input: "published" or "ours"
FIT_INPUT_COEFFICIENTS = f"{FIT_INPUT}/coefficients.csv"
FIT_INPUT_PREDICTIONS = f"{FIT_INPUT}/predictions.csv"
FIT_INPUT_POINTS = f"{FIT_INPUT}/points.csv"        # the points each fit went through
FIT_INPUT_DRAWS = f"{FIT_INPUT}/draws.csv"          # bootstrap draws of the paper's fits (figures' bands)
FIT_INPUT_EXTRAPOLATION = f"{FIT_INPUT}/extrapolation.csv"  # held-out runs predicted by laws fitted below a cut
FIT_INPUT_EXTRAPOLATION_SUMMARY = f"{FIT_INPUT}/extrapolation_summary.csv"  # per task and method
FIT_INPUT_COMPARISON = f"{FIT_INPUT}/comparison.csv"  # pairs of laws: exponent ratio, ΔE, crossing
FIT_INPUT_COMPUTE_OPTIMAL_LAWS = f"{FIT_INPUT}/compute_optimal_laws.csv"  # joint law in model size and samples seen
FIT_INPUT_COMPUTE_OPTIMAL = f"{FIT_INPUT}/compute_optimal.csv"  # optimal model and samples seen per budget
FIT_INPUT_COMPUTE_OPTIMAL_RUNS = f"{FIT_INPUT}/compute_optimal_runs.csv"  # each run against the optimum
FIT_INPUT_BIN_WINNERS = f"{FIT_INPUT}/bin_winners.csv"  # best run per compute bin (not an optimum: clipscale.compute_optimal)

# 6. figures and tables -------------------------------------------------------------------------
FIGURE = f"{RESULTS}/figures/{{figure}}.{{ext}}"
TABLE = f"{RESULTS}/tables/{{table}}.{{ext}}"
# analyses of each input (clipscale.analysis): input is "published" or "ours"
EXTRAPOLATION_TABLE = f"{RESULTS}/tables/extrapolation_{{input}}.md"
COMPARISON_TABLE = f"{RESULTS}/tables/comparison_{{input}}.md"
BIN_WINNERS_TABLE = f"{RESULTS}/tables/bin_winners_{{input}}.md"
COMPUTE_OPTIMAL_TABLE = f"{RESULTS}/tables/compute_optimal_{{input}}.md"
EXTRAPOLATION_FIGURE = f"{RESULTS}/figures/extrapolation_{{input}}.{{ext}}"
COMPARISON_FIGURE = f"{RESULTS}/figures/comparison_{{input}}.{{ext}}"
# our runs' training loss against samples seen (losses.csv of each run), and, with
# evaluate.all_checkpoints, the main set's error at every checkpoint (learning curves)
TRAINING_CURVES_FIGURE = f"{RESULTS}/figures/training_curves.{{ext}}"
LEARNING_CURVES_FIGURE = f"{RESULTS}/figures/learning_curves.{{ext}}"

LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"


def log_file(rule: str, *parts: str) -> str:
    """A job's log: results/logs/<rule>/<part>/.../<last part>.log (the rules' log:)."""
    return "/".join([LOGS, rule, *parts]) + ".log"


def benchmark_file(rule: str, *parts: str) -> str:
    """A job's benchmark: results/benchmarks/<rule>/<part>/.../<last part>.tsv."""
    return "/".join([BENCHMARKS, rule, *parts]) + ".tsv"


def downstream_dir(config: dict, dataset: str) -> str:
    """The clip_benchmark webdataset directory of a downstream set: its configured path, or the
    world's set of that name."""
    spec = config["downstream"][dataset]
    return spec.get("path", fill(WORLD_DOWNSTREAM, dataset=dataset))


def fill(pattern: str, **wildcards) -> str:
    """Format a pattern: fill(RUN_DONE, model='tiny-s', scale='S', samples='8k')."""
    return pattern.format(**wildcards)
