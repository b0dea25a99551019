rule train_model:
    """Fit one model: checkpoint, latents, intervention targets, loadings, training history.

    PyTorch models (sparse_vae, causal_vae) ask for one GPU (resource ``gpu=1``) unless the
    config says ``device: cpu``, and with ``--sdm conda`` run in ../envs/crl-pipe-gpu.yaml, the
    same environment with a CUDA build of PyTorch; they train on CUDA when the job sees a GPU,
    else on the CPU with a warning (an error with ``require_device: true``). Locally ``gpu``
    only counts; the slurm profile turns it into ``--gpus=1``.
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
        get_train_env
    threads: get_threads("train_model")
    resources:
        **get_resources("train_model"),
    params:
        model_params=get_model_params,
        seed=config["seed"],
        require_device=config["require_device"],
        held_out=get_held_out,
        out_dir=subpath(output.model, parent=True),
    script:
        "../workflow/scripts/train_model.py"
