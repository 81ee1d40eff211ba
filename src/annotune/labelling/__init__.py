"""The hybrid workflow: a label store, AI-crowd proposals, human review, fine-tuning on verified labels and
labelling a whole corpus with provenance (`Project`)."""

from annotune.labelling.workflow import Project

__all__ = ["Project"]
