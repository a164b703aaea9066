"""protege: distill a teacher language model into a small student, end to end."""

__version__ = "0.1.0"
