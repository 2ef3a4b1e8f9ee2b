"""Correction-centric evolution: new questions grown from correction seeds, labelled by majority vote.

python recipes/evolve.py --config recipes/smollm2-135m/evolve/config_sample.yaml
lema-hub evolve --config recipes/gpt-4/evolve/config_gsm8k.yaml
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("evolve")
