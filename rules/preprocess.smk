rule preprocess:
    """Model-ready data as the dataset kind preprocesses: normalised, log-transformed genes of a screen, standardised variables, robot channels."""
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
        options=get_preprocess_options,
    script:
        "../workflow/scripts/preprocess.py"
