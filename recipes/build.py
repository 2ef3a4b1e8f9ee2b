"""Build CoT + correction training rows, one config per ablation view.

python recipes/build.py --config recipes/smollm2-135m/build/config_sample.yaml
lema-hub build --config recipes/gpt-4/build/config_gsm8k.yaml
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("build")
