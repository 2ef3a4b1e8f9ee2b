"""Benchmark a corrector's first-error location on step-labelled solutions (ProcessBench by default).

python recipes/bench_corrector.py --config recipes/smollm2-135m/bench-corrector/config_reference.yaml
lema-hub bench-corrector --config recipes/gpt-4/bench-corrector/config_processbench.yaml
"""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("bench-corrector")
