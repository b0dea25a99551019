rule simulate_screen:
    """Simulate a Perturb-seq screen with a known latent causal graph (config.simulations)."""
    output:
        screen="resources/simulated/{sim}/screen.h5ad",
        gene_sets="resources/simulated/{sim}/programs.gmt",
        truth_graph="resources/simulated/{sim}/truth/graph.parquet",
        truth_targets="resources/simulated/{sim}/truth/targets.parquet",
        truth_latents="resources/simulated/{sim}/truth/latents.parquet",
    log:
        "logs/simulate_screen/{sim}.log",
    conda:
        "../envs/crl-pipe.yaml"
    params:
        simulation=get_simulation_params,
        truth_dir=subpath(output.truth_graph, parent=True),
    script:
        "../workflow/scripts/simulate_screen.py"
