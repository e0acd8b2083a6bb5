"""Data: in-memory splits, resumable mini-batch streams, few-shot episodes and regression tasks."""
