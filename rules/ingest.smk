rule ingest:
    """Read the raw input as its dataset kind reads it into the canonical ingested.h5ad, with QC metrics and guide calls."""
    input:
        raw=get_raw_input,
        files=get_ingest_files,
    output:
        h5ad="results/{dataset}/ingested.h5ad",
        qc="results/{dataset}/qc.parquet",
        guides="results/{dataset}/guides.parquet",
    log:
        "logs/ingest/{dataset}.log",
    conda:
        "../envs/crl-pipe.yaml"
    threads: get_threads("ingest")
    resources:
        **get_resources("ingest"),
    params:
        format=get_input_format,
        options=get_ingest_options,
        guide_calling=get_guide_calling,
        kind=get_kind,
    script:
        "../workflow/scripts/ingest.py"
