"""Evaluation: scoring whole splits, metrics, thresholds, the no-learning baseline, the report files
and pictures, output folders swapped in whole."""
