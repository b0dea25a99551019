rule train_model:
    """Fit one model: checkpoint, latents, intervention targets, loadings, training history.

    Trains on a GPU when the job sees one (CUDA first, then the CPU). On a cluster, ask for
    one with ``--set-resources train_model:gpu=1`` (or in the profile) and point ``conda:``
    at ../envs/crl-pipe-gpu.yaml, the same environment with a CUDA build of PyTorch.
    """
    input:
        preprocessed="results/{dataset}/preprocessed.h5ad",
        interventions="results/{dataset}/interventions.parquet",
        anchors="results/{dataset}/anchors.parquet",
    output:
        model="results/{dataset}/{model}/model.pt",
        meta="results/{dataset}/{model}/model.json",
        latents="results/{dataset}/{model}/latents.parquet",
        targets=report(
            "results/{dataset}/{model}/targets.parquet",
            caption="../workflow/report/targets.rst",
            category="Intervention targets",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "model": "{model}"},
        ),
        loadings="results/{dataset}/{model}/loadings.parquet",
        training="results/{dataset}/{model}/training.parquet",
    log:
        "logs/train_model/{dataset}/{model}.log",
    benchmark:
        "benchmarks/out/train_model/{dataset}/{model}.tsv"
    conda:
        "../envs/crl-pipe.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=0,
    params:
        model_params=get_model_params,
        seed=config["seed"],
        out_dir=subpath(output.model, parent=True),
    script:
        "../workflow/scripts/train_model.py"
