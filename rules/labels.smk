rule label_interventions:
    """One intervention label per sample: from the perturbation column of a screen, the commands and events of a robot log."""
    input:
        ingested="results/{dataset}/ingested.h5ad",
    output:
        interventions="results/{dataset}/interventions.parquet",
    log:
        "logs/label_interventions/{dataset}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("label_interventions")
    resources:
        **get_resources("label_interventions"),
    params:
        kind=get_kind,
        options=get_label_options,
    script:
        "../workflow/scripts/label_interventions.py"
