rule simulate_screen:
    """Simulate a Perturb-seq screen with a known latent causal graph (config.simulations).

    Its outputs depend only on params (the simulation settings and the digest of the simulator's
    code), so `snakemake --cache` with $SNAKEMAKE_OUTPUT_CACHE shares them between workflows.
    """
    output:
        screen="resources/simulated/{sim}/screen.h5ad",
        gene_sets="resources/simulated/{sim}/programs.gmt",
        truth_graph="resources/simulated/{sim}/truth/graph.parquet",
        truth_targets="resources/simulated/{sim}/truth/targets.parquet",
        truth_latents="resources/simulated/{sim}/truth/latents.parquet",
    log:
        "logs/simulate_screen/{sim}.log",
    wildcard_constraints:
        sim=one_of(SCREEN_SIMULATIONS),
    cache: "omit-software"
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("simulate_screen")
    resources:
        **get_resources("simulate_screen"),
    params:
        simulation=get_simulation_params,
        truth_dir=subpath(output.truth_graph, parent=True),
        code=SIMULATOR_CODE,
    script:
        "../workflow/scripts/simulate_screen.py"


rule simulate_robot:
    """Simulate robot logs with a known causal graph (config.simulations, kind robot) and write
    them as a LeRobot v2.1 dataset plus the truth; cached between workflows like simulate_screen.
    """
    output:
        dataset=directory("resources/simulated/{sim}/lerobot"),
        truth_graph="resources/simulated/{sim}/truth/graph.parquet",
        truth_targets="resources/simulated/{sim}/truth/targets.parquet",
        truth_latents="resources/simulated/{sim}/truth/latents.parquet",
    log:
        "logs/simulate_robot/{sim}.log",
    wildcard_constraints:
        sim=one_of(ROBOT_SIMULATIONS),
    cache: "omit-software"
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("simulate_robot")
    resources:
        **get_resources("simulate_robot"),
    params:
        simulation=get_simulation_params,
        truth_dir=subpath(output.truth_graph, parent=True),
        code=SIMULATOR_CODE,
    script:
        "../workflow/scripts/simulate_robot.py"
