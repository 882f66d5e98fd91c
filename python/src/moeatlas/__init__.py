"""MoE Atlas from Python: ``moeatlas.read(path)`` opens an atlas file (docs/atlas-format.md, docs/python.md)."""
from .atlas import (Atlas, AtlasSchemaError, Calibration, Domain, EvaluationTable, Fisher, HitRateTable, Layer,
                    Model, Prefetch, Results, ScoreTable, SimulationRun, Tokens, read)
from .schema import SCHEMA_VERSION

__version__ = "0.1.0"

__all__ = [
    "Atlas", "AtlasSchemaError", "Calibration", "Domain", "EvaluationTable", "Fisher", "HitRateTable", "Layer",
    "Model", "Prefetch", "Results", "SCHEMA_VERSION", "ScoreTable", "SimulationRun", "Tokens", "read",
]
