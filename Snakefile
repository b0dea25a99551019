# crl-pipe: causal representation learning on perturbation screens.
#
#   snakemake --cores all                                   # the embedded demo (config/config.yaml)
#   snakemake -s <repo>/Snakefile --directory <folder> --configfile <folder>/config.yaml --cores all
#
# config/README.md explains every config key and the artifacts under results/<dataset>/.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/resources.smk"


rule all:
    default_target: True
    input:
        get_final_targets,


include: "rules/simulate.smk"
include: "rules/ingest.smk"
include: "rules/labels.smk"
include: "rules/preprocess.smk"
include: "rules/anchors.smk"
include: "rules/train.smk"
include: "rules/graph.smk"
include: "rules/evaluate.smk"
include: "rules/steer.smk"
include: "rules/baselines.smk"
include: "rules/report.smk"
include: "rules/hierarchy.smk"
