#!/usr/bin/env bash
# Every command behind docs/en/benchmarks/, in one run: FLOPs of the recipes, then
# speed (backbones, whole models, pre-packed peers), one command at a time
# (a benchmark beside another job measures the contention). JSON into
# benchmarks/, each command's output into work_dirs/benchmarks/<name>.log.
# On 2 cores parts 1-3 took about 50 minutes (an Intel CPU) and part 4 about
# 40 (an AMD CPU). `make benchmarks` runs it; `ONLY=speed_whole` (a name
# prefix) runs a subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
LOGS=work_dirs/benchmarks
mkdir -p benchmarks "$LOGS"
ONLY=${ONLY:-}

run() {  # run NAME ARGS...: one tool call, JSON benchmarks/NAME.json
    local name=$1; shift
    [[ -n $ONLY && $name != $ONLY* ]] && return 0
    echo "[benchmarks] $(date +%H:%M:%S) $name: $*"
    "$PY" "$@" --json "benchmarks/$name.json" > "$LOGS/$name.log" 2>&1 \
        || { tail -20 "$LOGS/$name.log"; exit 1; }
}
flops() {  # flops CONFIG [--rate R]: get_flops.py of configs/CONFIG.py
    local config=$1; shift
    run "flops_${config//\//_}" tools/analysis_tools/get_flops.py \
        "configs/$config.py" "$@"
}
speed() {  # speed NAME ARGS...: backbones (benchmark_backbone.py)
    run "speed_$1" tools/analysis_tools/benchmark_backbone.py "${@:2}"
}
whole() {  # whole NAME ARGS...: a whole model (benchmark_model_forward.py)
    run "speed_$1" tools/analysis_tools/benchmark_model_forward.py "${@:2}"
}
e2e() {  # e2e NAME ARGS...: a test step (benchmark_test_step.py)
    run "speed_$1" tools/analysis_tools/benchmark_test_step.py "${@:2}"
}

# 1. FLOPs and parameters (deterministic)
for config in ade20k/dyt_vitb ade20k/dyt_vitb_moe ade20k/dyt_vitb_segmenter \
    kinetics400/dyt_vitb_8x224 kinetics400/dyt_vitb_moe_8x224 \
    coco/dyt_vitb_mask-rcnn_1x coco/dyt_vitb_moe_mask-rcnn_1x \
    coco/vitb_adapter_mask-rcnn_1x ade20k/dyt_swinb_upernet \
    coco/dyt_swinb_mask-rcnn_1x ade20k/dyt_dinov2b_upernet; do
    flops "$config" --rate 0.5
done
for config in ade20k/vitb_adapter ade20k/vitb_adapter_segmenter \
    kinetics400/vitb_adapter_8x224 ade20k/swinb_adapter_upernet; do
    flops "$config"
done
# the paper's Tables 17 and 18: Swin-B (window 7) and ViT-L/16 at 224
run flops_swin_b_224 tools/analysis_tools/get_flops.py \
    configs/coco/dyt_swinb_mask-rcnn_1x.py --shape 224 224 --rate 0.5
run flops_vit_l_224 tools/analysis_tools/get_flops.py \
    configs/ade20k/dyt_dinov2b_upernet.py --shape 224 224 --rate 0.5 \
    --cfg-options model.backbone.timm_arch=vit_large_patch16_224 \
    'model.backbone.img_size=[224,224]' \
    'model.backbone.out_indices=[7,11,15,23]' model.neck.embed_dim=1024 \
    'model.decode_head.in_channels=[1024,1024,1024,1024]' \
    model.auxiliary_head.in_channels=1024 \
    'model.data_preprocessor.size=[224,224]'

# 2. Backbones: ViT-B/16 at 224 (with the compiled and pre-packed peers), 512,
# clips, every token active, ViTDet-B at 1024
speed vit_b_224 --preset vit-b-224 --batch 1 8 --rate 0.5 --threads 1 2 \
    --repeats 15 --compile --prepack
speed vit_b_224_b8_long --preset vit-b-224 --batch 8 --rate 0.5 --threads 1 2 \
    --repeats 30
speed vit_b_224_b32 --preset vit-b-224 --batch 32 --rate 0.5 --threads 1 2 \
    --warmup 1 --repeats 10
speed vit_b_512 --preset vit-b-512 --batch 1 2 --rate 0.5 --threads 1 2 \
    --warmup 1 --repeats 8
speed vit_b_video --preset vit-b-video --batch 1 --rate 0.5 --threads 2 \
    --repeats 8
speed vit_b_224_rate1 --preset vit-b-224 --batch 1 8 --rate 1.0 --threads 2 \
    --repeats 10
speed vitdet_b_1024 --preset vitdet-b-1024 --rate 0.5 --threads 2 \
    --warmup 1 --repeats 5
speed swin_b_512 --preset swin-b-512 --batch 1 8 --rate 0.5 --threads 2 \
    --warmup 1 --repeats 8

# 3. Whole models: DyT vs adapter-only vs dense, same weights
whole whole_ade20k_segmenter --config configs/ade20k/dyt_vitb_segmenter.py \
    --rate 0.5 --batch 1 2 --threads 1 2 --warmup 1 --repeats 8
whole whole_ade20k_upernet --config configs/ade20k/dyt_vitb.py --rate 0.5 \
    --batch 1 --threads 2 --warmup 1 --repeats 7
whole whole_kinetics400 --config configs/kinetics400/dyt_vitb_8x224.py \
    --rate 0.5 --batch 1 --threads 2 --repeats 8
whole whole_coco_mask_rcnn --config configs/coco/dyt_vitb_mask-rcnn_1x.py \
    --rate 0.5 --batch 1 --threads 2 --warmup 1 --repeats 5
# 4. Pre-packed weights at every batch size: the dense ViT and DyT with and
# without them (docs/en/benchmarks/speed.md 3.7; on their own: ONLY=speed_prepack)
speed prepack_vit_b_224 --preset vit-b-224 --batch 1 8 32 --rate 0.5 \
    --threads 1 2 --warmup 1 --repeats 10 --prepack
speed prepack_vit_b_512 --preset vit-b-512 --batch 1 2 --rate 0.5 \
    --threads 2 --warmup 1 --repeats 8 --prepack
# 5. The path users run (measured on the AMD CPU before the low-precision weight
# copies; part 7 has the AMX runs): bfloat16 beside float32 (backbones), the
# recipes' whole test step end to end (sliding window, batched crops vs crop
# by crop, fp32 and bf16), and the op profile (casts, small matmuls)
speed bf16_vit_b_224 --preset vit-b-224 --batch 1 8 --rate 0.5 --threads 1 2 \
    --repeats 10 --bf16
speed bf16_vit_b_512 --preset vit-b-512 --batch 1 2 --rate 0.5 --threads 1 2 \
    --warmup 1 --repeats 6 --bf16
e2e e2e_ade20k_segmenter --config configs/ade20k/dyt_vitb_segmenter.py \
    --shapes 512x683 512x1024 512x2048 --precision fp32 bf16 \
    --threads 2 --warmup 1 --repeats 3
e2e e2e_ade20k_upernet --config configs/ade20k/dyt_vitb.py \
    --shapes 512x2048 --precision fp32 bf16 --models dyt adapter \
    --threads 2 --warmup 1 --repeats 3
run profile_vit_b_224 tools/analysis_tools/profile_ops.py --preset vit-b-224 \
    --batch 1 8 --threads 1 2
# 6. Deployment: DyT, adapter-only and dense exported to ONNX, in PyTorch
# eager, ONNX Runtime and OpenVINO (docs/en/benchmarks/deployment.md; about 7 minutes)
run deploy_vit_b_224 tools/deployment/benchmark_runtimes.py --preset vit-b-224 \
    --batch 1 8 --repeats 10
run deploy_segmenter_512 tools/deployment/benchmark_runtimes.py \
    --config configs/ade20k/dyt_vitb_segmenter.py --shape 512 512 --batch 1 \
    --warmup 1 --repeats 8
# 7. Low precision on a CPU with AMX (docs/en/benchmarks/speed.md 3.10; about
# 20 minutes): DyT against the strongest dense peer in bfloat16 (same
# low-precision kernels, or compiled), the Swin-B backbone, the Segmenter test
# step and OpenVINO at bfloat16 inference precision
speed bf16_vit_b_224_amx --preset vit-b-224 --batch 1 8 --rate 0.5 \
    --threads 2 --bf16 --compile --repeats 12
speed bf16_swin_b_512_amx --preset swin-b-512 --batch 1 --rate 0.5 \
    --threads 2 --bf16 --warmup 1 --repeats 6
e2e e2e_ade20k_segmenter_amx --config configs/ade20k/dyt_vitb_segmenter.py \
    --shapes 512x2048 --precision fp32 bf16 --models dyt adapter \
    --crop-modes batched --threads 2 --warmup 1 --repeats 5
run deploy_bf16_vit_b_224_amx tools/deployment/benchmark_runtimes.py \
    --preset vit-b-224 --batch 8 --openvino-bf16 --repeats 10
echo "[benchmarks] $(date +%H:%M:%S) done: benchmarks/*.json"
