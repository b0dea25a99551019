rule label_interventions:
    """Turn the perturbation column into one intervention label per cell."""
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
        robot_labels=get_robot_labels,
        perturbation_key=get_perturbation_key,
        control_values=get_control_values,
        min_cells=config["labels"]["min_cells"],
        target_map=get_intervention_targets,
    script:
        "../workflow/scripts/label_interventions.py"
