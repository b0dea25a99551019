rule steer:
    """Steering requests answered by a model with a latent linear SEM (steering.parquet), and its prediction
    of the held-out singles from prior knowledge scored beside three baselines (held_out_singles.parquet).
    """
    input:
        unpack(get_steer_hierarchy),
        preprocessed="results/{dataset}/preprocessed.h5ad",
        interventions="results/{dataset}/interventions.parquet",
        anchors="results/{dataset}/anchors.parquet",
        model="results/{dataset}/{model}/model.pt",
        meta="results/{dataset}/{model}/model.json",
    output:
        steering=report(
            "results/{dataset}/{model}/steering.parquet",
            caption="../workflow/report/steering.rst",
            category="Steering",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "what if"},
        ),
        singles="results/{dataset}/{model}/held_out_singles.parquet",
    log:
        "logs/steer/{dataset}/{model}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("steer")
    resources:
        **get_resources("steer"),
    params:
        requests=get_steer_requests,
        held_out=get_held_out,
        n_boot=config["steering"]["n_boot"],
        level=config["steering"]["level"],
        seed=config["seed"],
        model_dir=subpath(input.model, parent=True),
    script:
        "../workflow/scripts/steer.py"
