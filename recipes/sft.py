"""Fine-tune a model on a LeMa mixture view with TRL's SFTTrainer (LoRA, QLoRA or full).

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/sft.py \
        --config recipes/llama-2-7b/sft/config_lema_qlora.yaml

Same options as `lema-hub sft`; any config key can be overridden on the command line (`--learning_rate 1e-4`).
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("sft")
