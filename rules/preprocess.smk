rule preprocess:
    """Normalise, log-transform and select genes (HVGs, perturbed genes, gene-set members)."""
    input:
        unpack(get_gene_sets),
        ingested="results/{dataset}/ingested.h5ad",
        interventions="results/{dataset}/interventions.parquet",
    output:
        h5ad="results/{dataset}/preprocessed.h5ad",
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "benchmarks/out/preprocess/{dataset}.tsv"
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("preprocess")
    resources:
        **get_resources("preprocess"),
    params:
        kind=get_kind,
        channel_kinds=get_channel_kinds,
        n_top_genes=config["preprocess"]["n_top_genes"],
        target_sum=config["preprocess"]["target_sum"],
        format=get_input_format,
        transform=get_transform,
        cofactor=get_cofactor,
    script:
        "../workflow/scripts/preprocess.py"
