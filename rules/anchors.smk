rule build_anchors:
    """Anchor genes of each latent program: gene sets met with the data, or derived from it."""
    input:
        unpack(get_gene_sets),
        preprocessed="results/{dataset}/preprocessed.h5ad",
    output:
        anchors="results/{dataset}/anchors.parquet",
    log:
        "logs/build_anchors/{dataset}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("build_anchors")
    resources:
        **get_resources("build_anchors"),
    params:
        min_anchors=config["anchors"]["min_anchors"],
        exclusive=config["anchors"]["exclusive"],
        n_programs=get_n_latents,
        kind=get_kind,
    script:
        "../workflow/scripts/build_anchors.py"
