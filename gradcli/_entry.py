"""The ``gradcli`` console script: the first code that runs."""
from __future__ import annotations


def main():
    from .cli import main as group

    return group(prog_name="gradcli")
