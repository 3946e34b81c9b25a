# clipscale: "Reproducible scaling laws for contrastive language-image learning" as a workflow.
#   snakemake --cores 2                       # the embedded default, end to end
#   snakemake --cores 2 results/figures/imagenet_zeroshot_published.pdf   # one figure
#   snakemake --profile profiles/slurm --configfile config/paper.yaml     # the paper's grid
# Logic lives in the clipscale package (src/clipscale); rules only wire artifacts together.

from snakemake.utils import min_version

# the version line the workflow is written for (tested: 9.27.1, pinned in requirements.txt)
min_version("9.0")


# --configfile replaces this default (it is not merged into it); --config key=value amends it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/dedup.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        data_targets(),
        dedup_targets(),
        train_targets(),
        evaluate_targets(),
        finetune_table_targets(),
        fit_targets(),
        figure_targets(),
