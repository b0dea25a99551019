#!/usr/bin/env bash
# The CUDA path in one short run on a GPU machine: the model tests on the GPU, then training
# throughput of causal_vae (bf16 autocast) and sparse_vae against the same machine's CPU, then a
# profile of a few causal_vae epochs. Results: OUTDIR/throughput.csv, OUTDIR/*.log.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]      (default benchmarks/out/gpu)
#
# Each step has its own time limit so that one slow step cannot eat the others' time.
set -u
out=${1:-benchmarks/out/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}

nvidia-smi -L
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep the log, show its end
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "== $name: exit $? in $((SECONDS - t0)) s"
    tail -n 12 "$out/$name.log"
}
throughput=($py benchmarks/train_throughput.py --out "$out/throughput.csv")  # `timeout` runs programs, not functions

step tests 170 $py -m pytest -p no:cacheprovider -W "ignore::DeprecationWarning" -W "ignore::FutureWarning" \
    tests/test_training.py tests/test_causal_vae.py tests/test_sparse_vae.py tests/test_models.py \
    tests/test_camera_model.py
step causal_vae_cuda 60 "${throughput[@]}" --cells 20000 --genes 400 --model causal_vae
step causal_vae_cpu16 60 "${throughput[@]}" --cells 20000 --genes 400 --model causal_vae --threads 16 \
    --params '{"device": "cpu", "epochs": 10}'
step sparse_vae_cuda 45 "${throughput[@]}" --cells 20000 --genes 400 --model sparse_vae
step causal_vae_cuda_nonlinear 100 "${throughput[@]}" --cells 50000 --genes 400 --programs 10 --mixing nonlinear \
    --model causal_vae
step causal_vae_cuda_large 100 "${throughput[@]}" --cells 100000 --genes 1000 --programs 10 --model causal_vae \
    --params '{"epochs": 10}'
step profile 90 $py - <<'EOF'
"""Where a causal_vae epoch spends its time on the GPU (3 epochs, 20,000 cells x 400 genes)."""
import torch
from torch.profiler import ProfilerActivity, profile

from crl_pipe import tl
from crl_pipe.simulate import screen_to_crl_data, simulate_screen

data = screen_to_crl_data(simulate_screen(n_programs=6, n_genes=400, n_control=10000,
                                          cells_per_perturbation=1100, n_doubles=3, seed=0))
tl.train(data, model="causal_vae", params={"epochs": 1}, seed=0)  # warm-up: CUDA context, kernels
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    tl.train(data, model="causal_vae", params={"epochs": 3}, seed=0)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=10))
EOF
cat "$out/throughput.csv"
