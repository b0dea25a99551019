rule simulate_module_truth:
    """The module truth of a two-level simulated screen (simulations.<name>.n_modules) or of simulated
    robot logs with limbs (n_limbs), from the simulation's settings without drawing the data again.
    """
    input:
        truth_graph="resources/simulated/{sim}/truth/graph.parquet",
    output:
        hierarchy="resources/simulated/{sim}/truth/hierarchy.parquet",
        module_graph="resources/simulated/{sim}/truth/module_graph.parquet",
    log:
        "logs/simulate_module_truth/{sim}.log",
    wildcard_constraints:
        sim=one_of(SIMULATIONS),
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("simulate_module_truth")
    resources:
        **get_resources("simulate_module_truth"),
    params:
        simulation=get_simulation_params,
        truth_dir=subpath(output.hierarchy, parent=True),
    script:
        "../workflow/scripts/simulate_module_truth.py"


rule learn_hierarchy:
    """Level 2 of the concept graph: modules of programs (chosen by minimality), the module graph,
    and the program graph re-read given the modules (datasets with a hierarchy entry); levels above
    2 up to hierarchy.max_level where minimality keeps them.
    """
    input:
        latents="results/{dataset}/{model}/latents.parquet",
        interventions="results/{dataset}/interventions.parquet",
        anchors="results/{dataset}/anchors.parquet",
    output:
        hierarchy=report(
            "results/{dataset}/{model}/hierarchy.parquet",
            caption="../workflow/report/hierarchy.rst",
            category="Concept levels",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}", "table": "hierarchy"},
        ),
        modules="results/{dataset}/{model}/modules.parquet",
        module_graph="results/{dataset}/{model}/module_graph.parquet",
        graph_given_modules="results/{dataset}/{model}/graph_given_modules.parquet",
        summary="results/{dataset}/{model}/hierarchy.json",
    log:
        "logs/learn_hierarchy/{dataset}/{model}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("learn_hierarchy")
    resources:
        **get_resources("learn_hierarchy"),
    params:
        given=get_given_hierarchy,
        n_resamples=get_hierarchy_resamples,
        max_level=get_hierarchy_max_level,
        seed=config["seed"],
        kind=get_kind,
    script:
        "../workflow/scripts/learn_hierarchy.py"
