"""radlab: a notebook-first workbench for RL of chest X-ray vision-language models."""

__version__ = "0.1.0"
