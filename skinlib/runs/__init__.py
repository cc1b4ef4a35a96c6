"""Runs: a training run's configuration and schema (:mod:`skinlib.runs.config`) and the run store, one
folder per configuration and data set with its files (:mod:`skinlib.runs.store`)."""

from skinlib.runs.config import (
    BATCH_SCALINGS,
    COMPILE_MODES,
    OPTIMIZERS,
    RUNTIME_FIELDS,
    SAMPLERS,
    RunConfig,
    Spec,
    check_type,
    run_hash,
    specs,
)
from skinlib.runs.store import (
    ABSENT_ROW,
    BUNDLE_MARKER,
    DATA_FILE,
    FILES,
    HISTORY_COLUMNS,
    LOCKS_DIR,
    PREDICTION_ID_COLUMNS,
    RUNS_ENV,
    MissingRunError,
    Run,
    RunFileError,
    RunFiles,
    load_checkpoint,
    partial_bundle,
    prediction_columns,
    predictions_frame,
    read_history,
    read_predictions,
    runs_root,
    training_allowed,
    write_history,
    write_predictions,
)

__all__ = [
    "ABSENT_ROW", "BATCH_SCALINGS", "BUNDLE_MARKER", "COMPILE_MODES", "DATA_FILE", "FILES", "HISTORY_COLUMNS",
    "LOCKS_DIR", "OPTIMIZERS", "PREDICTION_ID_COLUMNS", "RUNS_ENV",
    "RUNTIME_FIELDS", "SAMPLERS", "MissingRunError", "Run", "RunConfig", "RunFileError", "RunFiles", "Spec",
    "check_type", "load_checkpoint", "partial_bundle", "prediction_columns", "predictions_frame",
    "read_history", "read_predictions", "run_hash", "runs_root", "specs", "training_allowed", "write_history",
    "write_predictions",
]
