# Classical causal discovery (causal-learn's PC and GES) on the preprocessed variables, beside the
# CRL models: same graph.parquet and metrics.parquet contract, so collect_benchmark and the report
# list them next to the models. Datasets pick them with `baselines: [pc]`.


wildcard_constraints:
    baseline=one_of(BASELINES),


rule fit_baseline:
    """Causal graph of the observed variables by a classical method, with each edge's stability and confidence call."""
    input:
        preprocessed="results/{dataset}/preprocessed.h5ad",
        interventions="results/{dataset}/interventions.parquet",
    output:
        graph=report(
            "results/{dataset}/{baseline}/graph.parquet",
            caption="../workflow/report/graph.rst",
            category="Causal graph",
            subcategory="{dataset}",
            labels={
                "dataset": "{dataset}",
                "model": "{baseline}",
                "format": "Parquet",
            },
        ),
        graphml="results/{dataset}/{baseline}/graph.graphml",
        meta="results/{dataset}/{baseline}/model.json",
    log:
        "logs/fit_baseline/{dataset}/{baseline}.log",
    benchmark:
        "benchmarks/out/fit_baseline/{dataset}/{baseline}.tsv"
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("fit_baseline")
    resources:
        **get_resources("fit_baseline"),
    params:
        baseline_params=lambda wildcards: dict(config["baselines"][wildcards.baseline]),
        n_refits=config["graph"]["n_refits"],
        seed=config["seed"],
        held_out=get_held_out,
        min_stability=config["graph"]["min_stability"],
        min_weight_z=config["graph"]["min_weight_z"],
        min_orientation=config["graph"]["min_orientation"],
    script:
        "../workflow/scripts/fit_baseline.py"


rule evaluate_baseline:
    """SHD, edge precision and recall of a baseline's graph against the true graph."""
    input:
        unpack(get_truth_graph),
        graph="results/{dataset}/{baseline}/graph.parquet",
    output:
        metrics=report(
            "results/{dataset}/{baseline}/metrics.parquet",
            caption="../workflow/report/metrics.rst",
            category="Evaluation",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{baseline}"},
        ),
    log:
        "logs/evaluate_baseline/{dataset}/{baseline}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("evaluate_baseline")
    resources:
        **get_resources("evaluate_baseline"),
    script:
        "../workflow/scripts/evaluate_baseline.py"
