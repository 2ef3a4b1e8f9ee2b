"""Collect mistakes: sample CoT paths, grade them, keep the wrong ones.

python recipes/collect.py --config recipes/smollm2-135m/collect/config_sample.yaml
lema-hub collect --config recipes/llama-2-70b/collect/config_gsm8k.yaml --shard 0/8
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("collect")
