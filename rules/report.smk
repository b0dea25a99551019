localrules:
    collect_benchmark,


rule write_report:
    """The self-contained HTML report of one dataset across its models."""
    input:
        unpack(get_truth_graph),
        unpack(get_report_files),
        qc="results/{dataset}/qc.parquet",
        interventions="results/{dataset}/interventions.parquet",
        anchors="results/{dataset}/anchors.parquet",
        models=get_report_models,
    output:
        html=report(
            "results/{dataset}/report.html",
            caption="../workflow/report/report.rst",
            category="Reports",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/write_report/{dataset}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("write_report")
    resources:
        **get_resources("write_report"),
    params:
        model_dirs=get_model_dirs,
        baseline_dirs=get_baseline_dirs,
        config=get_report_config,
    script:
        "../workflow/scripts/write_report.py"


rule collect_benchmark:
    """Metrics of every model on every dataset with ground truth, in one table."""
    input:
        metrics=get_benchmark_metrics,
    output:
        benchmark=report(
            "results/benchmark.parquet",
            caption="../workflow/report/benchmark.rst",
            category="Evaluation",
            labels={"table": "benchmark"},
        ),
    log:
        "logs/collect_benchmark/all.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("collect_benchmark")
    resources:
        **get_resources("collect_benchmark"),
    params:
        runs=get_benchmark_runs,
    script:
        "../workflow/scripts/collect_benchmark.py"
