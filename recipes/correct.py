"""Correct mistakes with an LLM corrector or the offline rule-based reference corrector.

python recipes/correct.py --config recipes/smollm2-135m/correct/config_reference.yaml
lema-hub correct --config recipes/gpt-4/correct/config_gsm8k.yaml
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("correct")
