"""Results bundles: the small, committed outcome of a profile's runs, rendered anywhere without training.

A bundle ``results/<profile>/`` holds, per finished run, what the chapters read: its
config, data fingerprint, history, metrics, predictions (internal test and ISIC 2018
test), and what chapter 06 draws from a trained model (Grad-CAM scores, 8-bit maps
of a few examples), but no weights. Text stays text (YAML, JSON, the history CSV);
the long per-image tables are gzip-compressed CSV and the splits, shared by most runs,
are stored once. ``bundle.json`` lists every file with its SHA-256 and says when,
where (device, versions) and with which parameters the runs were made.

``unpack`` restores the runs into a run store, marked as bundled
(:data:`~skinlib.runs.BUNDLE_MARKER`), after checking that the local data has the
fingerprint the runs were trained on; the store then treats them as finished.

One file per job, this module being their common face: the format (:mod:`.bundle_format`), packing and what
is derived before packing (:mod:`.pack`), the trust boundary that reads a bundle as hostile input and restores
it (:mod:`.unpack`), and the inventory of a profile's runs (:mod:`.inventory`).
"""

from skinlib.study.bundle_format import (
    BINARY_FILES,
    BUNDLE_FILE,
    COMMIT_ENV,
    DATA_FOLDER,
    FORMAT,
    GZIP_FILES,
    MAX_BYTES,
    PLAIN_FILES,
    REQUIRED_RUN_FILES,
    RUN_FILES,
    BundleError,
    bundle_dir,
    git_commit,
    results_root,
)
from skinlib.study.inventory import ProfileRuns, no_training, profile_runs
from skinlib.study.pack import (
    CAM_EXAMPLES,
    OPTIONAL_PACKAGES,
    PackResult,
    derive,
    derive_run,
    drawn_images,
    missing_optional,
    pack_profile,
    pack_runs,
    write_data_summary,
)
from skinlib.study.unpack import (
    MAX_EXPANDED,
    MAX_EXPANDED_FILE,
    MAX_SUMMARY_PIXELS,
    UnpackResult,
    data_snapshot,
    read_bundle,
    unpack,
)

__all__ = [
    "BINARY_FILES", "BUNDLE_FILE", "CAM_EXAMPLES", "COMMIT_ENV", "DATA_FOLDER", "FORMAT", "GZIP_FILES", "MAX_BYTES",
    "MAX_EXPANDED", "MAX_EXPANDED_FILE", "MAX_SUMMARY_PIXELS", "OPTIONAL_PACKAGES", "PLAIN_FILES",
    "REQUIRED_RUN_FILES", "RUN_FILES", "BundleError", "PackResult", "ProfileRuns", "UnpackResult", "bundle_dir",
    "data_snapshot", "derive", "derive_run", "drawn_images", "git_commit", "missing_optional", "no_training",
    "pack_profile", "pack_runs", "profile_runs", "read_bundle", "results_root", "unpack", "write_data_summary",
]
