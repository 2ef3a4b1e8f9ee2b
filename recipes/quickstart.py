"""The whole LeMa pipeline offline on CPU: `python recipes/quickstart.py --config recipes/quickstart.yaml`."""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("quickstart")
