"""Push any artifact folder to the Hub in one commit: `python recipes/push.py FOLDER REPO_ID [--repo_type model]`."""

from lema_hub.cli import run_stage

if __name__ == "__main__":
    run_stage("push")
