# shellcheck shell=bash
# Every knob of a llama31_8b run, once: its default and what it does.
#
#   source config.sh && bash run_llama31.sh            submit the configured runs (Slurm by default)
#   source config.sh && bash run_llama31.sh --dry-run  print what would be submitted, submit nothing
#
# Edit the defaults below, or set a value before sourcing: each line keeps a value already in the
# shell (NAME="${NAME:-default}"), so `export GBS=32; source config.sh` keeps GBS=32. Nothing here is
# a placeholder: an empty value means what its comment says, and whatever the chosen mode still
# needs (data paths for the 8B preset, MODEL_CKPT for USE_CKPT=1, ...) is reported by
# run_llama31.sh, all names together, before anything runs or is submitted. Submission happens
# from the cluster's login node; there is no SSH tunnel to set up.
#
# "(preset)" marks a knob whose empty value leaves the training entry's default for the preset in
# place (`python -m benchmark.train --preset llama31_8b --print-config` prints them all, and names on
# stderr the data paths a run would still need). Setting GBS alone also picks that batch size's
# reference learning rate and warmup (its RCP's, docs/FIDELITY.md).

# --- Launcher --------------------------------------------------------------------------------
export MODE="${MODE:-slurm}"                    # slurm: sbatch from a login node; local: python/torchrun here
export GPUS_PER_NODE="${GPUS_PER_NODE:-8}"      # processes (one per GPU) per node; 0 = one CPU process per node

# --- Slurm (MODE=slurm) ----------------------------------------------------------------------
export ACCOUNT="${ACCOUNT:-}"                   # sbatch --account; empty = your default account
export PARTITION="${PARTITION:-}"               # sbatch --partition; empty = the cluster's default partition
export NNODES="${NNODES:-1}"                    # nodes per job
export TIME="${TIME:-08:00:00}"                 # wall-clock limit of each job (sbatch --time)
export MAX_RETRIES="${MAX_RETRIES:-0}"          # requeue a failed or early-stopped job up to this many times
export SIGNAL_MINUTES="${SIGNAL_MINUTES:-10}"   # SIGUSR1 this many minutes before TIME (sbatch --signal=B:USR1@): the job saves and stops; 0 = none
export IMAGE="${IMAGE:-}"                       # pyxis/enroot image (.sqsh or registry#image); empty = host env
export DOCKER_IMAGE="${DOCKER_IMAGE:-llama31-8b}"  # image dev/run_docker.sh runs (docker build -t llama31-8b .)

# --- Paths (mounted at the same path inside the containers) ----------------------------------
export PREPROCESSED_PATH="${PREPROCESSED_PATH:-}"  # tokenized C4 .bin/.idx (utils.c4 download-preprocessed, or preprocess.sh); needed unless PRESET=smoke
export TOKENIZER_PATH="${TOKENIZER_PATH:-}"        # Llama 3.1 tokenizer folder; needed unless PRESET=smoke
export JOB_DIR="${JOB_DIR:-}"                   # logs: JOB_DIR/<run>/; empty = a new results/<date-time> at each launch
export CHECKPOINT_DIR="${CHECKPOINT_DIR:-}"     # checkpoints go to CHECKPOINT_DIR/<run>/; empty = JOB_DIR/<run>/checkpoints
export INDEX_CACHE_DIR="${INDEX_CACHE_DIR:-}"   # dataset index cache; empty = PREPROCESSED_PATH/index_cache
export SMOKE_DATA_DIR="${SMOKE_DATA_DIR:-}"     # PRESET=smoke without the two paths above: its embedded data set is built (once, offline) and reused here; empty = work_dir/smoke

# --- Model and schedule ----------------------------------------------------------------------
export PRESET="${PRESET:-llama31_8b}"           # llama31_8b (the benchmark) | smoke (tiny model, CPU)
export BENCHMARK_AREA="${BENCHMARK_AREA:-}"     # (preset) C4 groups trained on: en6 (c4-train.en_6) | en6+en7; llama31_8b: en6
export GBS="${GBS:-}"                           # (preset) global batch size in sequences; llama31_8b: 16
export MBS="${MBS:-}"                           # (preset) micro batch per replica; llama31_8b: 1
export LR="${LR:-}"                             # (preset) base learning rate; empty = the RCP value for GBS
export WARMUP_SAMPLES="${WARMUP_SAMPLES:-}"     # (preset) linear warmup in samples; empty = the RCP value for GBS
export MAX_STEPS="${MAX_STEPS:-}"               # (preset) steps that shape the cosine decay; llama31_8b: 1200000
export TP="${TP:-}"                             # (preset) tensor-parallel size; 1
export PP="${PP:-}"                             # (preset) pipeline-parallel size; 1
export CP="${CP:-}"                             # (preset) context-parallel size; 1
export PRECISION="${PRECISION:-}"               # (preset) bf16 | fp32 | auto (bf16 on GPU)
export LAYER_SPEC="${LAYER_SPEC:-}"             # (preset) te | local | auto (te where TransformerEngine imports, on GPU)
export SEQUENCE_PARALLEL="${SEQUENCE_PARALLEL:-}"  # (preset) on | off | auto (on with TP > 1 under the TE spec)
export FP8="${FP8:-}"                           # (preset) 1 = FP8 hybrid through TransformerEngine (TE spec); 0
export FP8_RECIPE="${FP8_RECIPE:-}"             # (preset) tensorwise (current scaling) | delayed | blockwise
export FP8_AMAX_HISTORY="${FP8_AMAX_HISTORY:-}" # (preset) FP8_RECIPE=delayed: amax history length; 1
export FP8_AMAX_ALGO="${FP8_AMAX_ALGO:-}"       # (preset) FP8_RECIPE=delayed: most_recent | max
export FP8_ATTENTION="${FP8_ATTENTION:-}"       # (preset) FP8=1: 1 = attention (TE's fused attention) in FP8 too (NVIDIA's FP8_DPA); 0
export FP8_PARAM_GATHER="${FP8_PARAM_GATHER:-}" # (preset) FP8=1: weights kept and all-gathered in FP8: on | off | auto (on with DP > 1)
export PRECISION_AWARE_OPTIMIZER="${PRECISION_AWARE_OPTIMIZER:-}"  # (preset) TE's FusedAdam keeps the fp32 master weights: on | off | auto (on under TE in bf16, bf16 weights)
export RECOMPUTE="${RECOMPUTE:-}"               # (preset) 1 = full activation recomputation; 0
export RECOMPUTE_LAYERS="${RECOMPUTE_LAYERS:-}" # (preset) with RECOMPUTE=1, only the first N layers per stage; 0 = all
export FUSIONS="${FUSIONS:-}"                   # (preset) fused kernels (SwiGLU, cross-entropy; under TE RoPE, the MLP at TP 1): on | off | auto
export COMPILE="${COMPILE:-}"                   # (preset) 1 = torch.compile each transformer layer; 0
export DEVICE="${DEVICE:-}"                     # (preset) cuda | cpu | auto
export EVAL_EVERY="${EVAL_EVERY:-}"             # (preset) evaluate every this many samples; llama31_8b: 12288
export EVAL_SAMPLES="${EVAL_SAMPLES:-}"         # (preset) validation sequences per evaluation; llama31_8b: 1024
export EVAL_SET="${EVAL_SET:-}"                 # (preset) reference (NeMo's seeded validation GPTDataset, as the RCPs) | file-order; reference
export TARGET="${TARGET:-}"                     # (preset) stop with success at eval loss <= this; llama31_8b: 3.3
export MAX_TRAIN_SAMPLES="${MAX_TRAIN_SAMPLES:-}"  # (preset) stop as aborted after this many; empty = 2x RCP mean
export LOG_EVERY="${LOG_EVERY:-}"               # (preset) print training metrics every this many steps

# --- Model shape: for experiments only; a changed shape is not the benchmark -----------------
export NUM_LAYERS="${NUM_LAYERS:-}"             # (preset) transformer layers; llama31_8b: 32
export HIDDEN_SIZE="${HIDDEN_SIZE:-}"           # (preset) model width; 4096
export FFN_HIDDEN_SIZE="${FFN_HIDDEN_SIZE:-}"   # (preset) SwiGLU inner width; 14336
export NUM_HEADS="${NUM_HEADS:-}"               # (preset) attention heads; 32
export NUM_KV_GROUPS="${NUM_KV_GROUPS:-}"       # (preset) key/value groups (GQA); 8
export SEQ_LENGTH="${SEQ_LENGTH:-}"             # (preset) tokens per sequence; 8192
export VOCAB_SIZE="${VOCAB_SIZE:-}"             # (preset) embedding rows; empty = tokenizer size padded for TP

# --- Experiment ------------------------------------------------------------------------------
export NEXP="${NEXP:-1}"                        # runs, each with its own seed; a submission needs 10
export SEEDS="${SEEDS:-}"                       # seeds of the runs, space-separated, each 0..4294967295; empty = generated (and logged)
# (benchmark.train's SEED and RESULT_DIR are set by the launcher for each run, from SEEDS and JOB_DIR.)
export NPAR="${NPAR:-1}"                        # consecutive jobs per run, each resuming from its checkpoint
export JOB_SAMPLES="${JOB_SAMPLES:-}"           # (preset) samples a job trains before it checkpoints and ends; NPAR > 1 needs it
export SAVE_CKPT="${SAVE_CKPT:-0}"              # 1 = also checkpoint after every evaluation (a retried job resumes there)
export EXIT_DURATION_MINS="${EXIT_DURATION_MINS:-}"  # (preset) stop as SIGTERM does (checkpoint, exit 75) after this many minutes of a job; 0
export CKPT_FORMAT="${CKPT_FORMAT:-fast}"           # optimizer state on GPU: fast (parallel per-rank shards) | portable (per parameter, also resumes under the other LAYER_SPEC)
export USE_CKPT="${USE_CKPT:-0}"                # 1 = initialize from MODEL_CKPT instead of random weights
export FROM_HF="${FROM_HF:-0}"                  # 1 = MODEL_CKPT is a Hugging Face checkpoint, converted on load
export MODEL_CKPT="${MODEL_CKPT:-}"             # checkpoint to start from; needed by USE_CKPT=1 or FROM_HF=1

# --- Watching a run (none of it reaches the MLPerf log; docs/CLUSTER.md, "Watching a run") ---
export TENSORBOARD_DIR="${TENSORBOARD_DIR:-}"   # TensorBoard scalars (x axis: samples) go to TENSORBOARD_DIR/<preset>_seed<seed>; empty = none
export WANDB_PROJECT="${WANDB_PROJECT:-}"       # also log them to this Weights & Biases project (pip install wandb; WANDB_MODE=offline needs no network); empty = none
export PROFILE_STEPS="${PROFILE_STEPS:-}"       # START:END = torch.profiler over steps START..END-1 (from 1), Chrome + TensorBoard traces; empty = none
export PROFILE_DIR="${PROFILE_DIR:-}"           # where the traces go; empty = RESULT_DIR/profile (JOB_DIR/<run>/profile)
export PROFILE_RANKS="${PROFILE_RANKS:-}"       # (preset) with PROFILE_STEPS: ranks that profile, comma-separated, or all; 0
export PROFILE_MEMORY="${PROFILE_MEMORY:-}"     # (preset) with PROFILE_STEPS, GPU only: 1 = CUDA memory snapshot of the window; 0

# --- MLPerf submission metadata (written to the MLPerf log) ----------------------------------
export SUBMISSION_ORG="${SUBMISSION_ORG:-}"     # (preset) submission_org; reference
export SUBMISSION_PLATFORM="${SUBMISSION_PLATFORM:-}"  # (preset) submission_platform; empty = from the hardware
export SUBMISSION_DIVISION="${SUBMISSION_DIVISION:-}"  # (preset) closed | open; closed
export SUBMISSION_STATUS="${SUBMISSION_STATUS:-}"      # (preset) onprem | cloud | preview | research; onprem

