rule evaluate:
    """Compare the recovered model with the ground truth (datasets with config truth only)."""
    input:
        unpack(get_truth),
        graph="results/{dataset}/{model}/graph.parquet",
        targets="results/{dataset}/{model}/targets.parquet",
        latents="results/{dataset}/{model}/latents.parquet",
    output:
        metrics=report(
            "results/{dataset}/{model}/metrics.parquet",
            caption="../workflow/report/metrics.rst",
            category="Evaluation",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}"},
        ),
    log:
        "logs/evaluate/{dataset}/{model}.log",
    conda:
        "../envs/crl-pipe.yaml"
    script:
        "../workflow/scripts/evaluate.py"
