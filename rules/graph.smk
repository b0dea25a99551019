rule recover_graph:
    """Latent causal graph of the fitted model, each edge with its stability selection and confidence.

    Refits retrain the model on half-samples, so PyTorch models ask for a GPU here too.
    """
    input:
        preprocessed="results/{dataset}/preprocessed.h5ad",
        interventions="results/{dataset}/interventions.parquet",
        anchors="results/{dataset}/anchors.parquet",
        model="results/{dataset}/{model}/model.pt",
        meta="results/{dataset}/{model}/model.json",
    output:
        graph=report(
            "results/{dataset}/{model}/graph.parquet",
            caption="../workflow/report/graph.rst",
            category="Causal graph",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "format": "Parquet"},
        ),
        graphml=report(
            "results/{dataset}/{model}/graph.graphml",
            caption="../workflow/report/graphml.rst",
            category="Causal graph",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "format": "GraphML"},
        ),
    log:
        "logs/recover_graph/{dataset}/{model}.log",
    benchmark:
        "benchmarks/out/recover_graph/{dataset}/{model}.tsv"
    conda:
        get_train_env
    threads: get_threads("recover_graph")
    resources:
        **get_resources("recover_graph"),
    params:
        n_refits=get_n_refits,
        seed=config["seed"],
        held_out=get_held_out,
        min_stability=config["graph"]["min_stability"],
        min_weight_z=config["graph"]["min_weight_z"],
        min_orientation=config["graph"]["min_orientation"],
        model_dir=subpath(input.model, parent=True),
    script:
        "../workflow/scripts/recover_graph.py"
