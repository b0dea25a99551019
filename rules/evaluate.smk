rule evaluate:
    """Compare the recovered model with the ground truth (datasets with config truth only)."""
    input:
        unpack(get_truth),
        unpack(get_predictions),
        unpack(get_single_scores),
        unpack(get_hierarchy_outputs),
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
    threads: get_threads("evaluate")
    resources:
        **get_resources("evaluate"),
    script:
        "../workflow/scripts/evaluate.py"


rule predict_held_out:
    """Cells of the held-out combinations predicted by a model that generates cells (causal_vae),
    scored against the observed cells beside the control-mean and additive baselines."""
    input:
        preprocessed="results/{dataset}/preprocessed.h5ad",
        interventions="results/{dataset}/interventions.parquet",
        anchors="results/{dataset}/anchors.parquet",
        model="results/{dataset}/{model}/model.pt",
        meta="results/{dataset}/{model}/model.json",
    output:
        predictions=report(
            "results/{dataset}/{model}/predictions.parquet",
            caption="../workflow/report/predictions.rst",
            category="Evaluation",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "held out"},
        ),
    log:
        "logs/predict_held_out/{dataset}/{model}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("predict_held_out")
    resources:
        **get_resources("predict_held_out"),
    params:
        held_out=get_held_out,
        seed=config["seed"],
        model_dir=subpath(input.model, parent=True),
    script:
        "../workflow/scripts/predict_held_out.py"
