"""Deprecated name of `recipes/build.py` (kept so existing commands keep working)."""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("build")
