"""Zero-shot pass@1 evaluation (GSM8K, MATH, MATH-500, the bundled sample); see lema_hub.evaluate.

python recipes/evaluate.py --config recipes/smollm2-135m/evaluate/config_sample.yaml
lema-hub evaluate --config recipes/smollm2-135m/evaluate/config_gsm8k.yaml --problems_limit 100
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("evaluate")
