"""Several training runs at once on one machine: each in its own process and run folder.

Small models at small batch leave a GPU mostly idle, and a study is many independent
runs, so ``jobs`` runs train side by side (sharing the GPU, or splitting the CPU's
threads). The run store's per-run lock keeps two processes off the same run, so
concurrent studies, books or machines sharing a runs folder never train a run twice.

Results do not depend on ``jobs`` as long as each run gets the same number of CPU
threads (``threads``): the thread count changes the rounding of CPU float sums.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch

from skinlib.models import create_model
from skinlib.policy import current as current_policy
from skinlib.runs import Run, RunConfig
from skinlib.runs.workspace import Workspace
from skinlib.study.profiles import Profile
from skinlib.train import fit

log = logging.getLogger(__name__)

GPU_MEMORY_PER_JOB_GIB = 12.0  # the largest run of the book: EfficientNet-B0 at 224 px, batch 256, ~11.5 GiB
MAX_JOBS = 8


CUDA_CONTEXT_GIB = 0.6  # what a process holds on the GPU before its first tensor (CUDA context, cuDNN, cuBLAS)
MEMORY_MARGIN = 1.25  # allocator fragmentation and workspaces above the tensors counted


def training_memory_gib(model: str, image_size: int, batch_size: int, *, amp: bool = True) -> float:
    """GPU memory one training run of ``model`` needs, estimated on the CPU: the outputs every module keeps
    for the backward pass (one image, scaled to the batch; half precision under ``amp``), the weights, their
    gradients and AdamW's two moments in float32, the CUDA context, and :data:`MEMORY_MARGIN` on top."""

    net = create_model(model, num_classes=7).train()
    kept = 0

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal kept
        outs = output if isinstance(output, (tuple, list)) else [output]
        kept += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))

    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    try:
        net(torch.zeros(2, 3, image_size, image_size))  # two images: BatchNorm needs more than one
    finally:
        for hook in hooks:
            hook.remove()
    activations = kept / 2 * batch_size * (2 if amp else 4)
    state = sum(p.numel() for p in net.parameters()) * 4 * 4  # weights, gradients, two AdamW moments
    return (activations + state) * MEMORY_MARGIN / 2**30 + CUDA_CONTEXT_GIB


def auto_jobs(device: str = "auto", *, per_job_gib: float | None = None) -> int:
    """How many runs to train at once here: by free GPU memory on CUDA, ``per_job_gib`` each (the largest
    run's :func:`training_memory_gib`; default :data:`GPU_MEMORY_PER_JOB_GIB`), at most ``MAX_JOBS`` and one
    per two CPU cores, which feed the processes; else one per CPU core with one thread each (on 2 cores, 2 jobs
    trained the smoke book's runs 1.22x faster than 1 job with 2 threads)."""
    cores = os.cpu_count() or 1
    if device in ("auto", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        by_memory = int(free / 2**30 // (per_job_gib or GPU_MEMORY_PER_JOB_GIB))
        return max(1, min(MAX_JOBS, by_memory, cores // 2))
    return max(1, min(MAX_JOBS, cores))


def data_memory_gib(images: int, image_size: int, batch_size: int) -> float:
    """GPU memory of one run's data: every image decoded to uint8 at ``image_size`` (the training, validation
    and test parts stay on the GPU) and the augmentation's float32 buffers of a batch (input, crop grid,
    output, normalised copy: about four)."""
    return (images * 3 * image_size**2 + 4 * batch_size * 3 * image_size**2 * 4) / 2**30


def profile_memory_gib(params: Profile, models: Sequence[str]) -> float:
    """The largest :func:`training_memory_gib` over ``models`` (those the profile trains:
    :func:`~skinlib.study.experiments.profile_models`), at its image size and batch (mixed precision, as training
    on CUDA uses it), plus the run's GPU-resident data (:func:`data_memory_gib`, at HAM10000's 10,015 images
    times the profile's subset)."""
    size, batch = params.image_size, params.batch_size
    data = data_memory_gib(int(10_015 * params.subset), size, batch)
    return max(training_memory_gib(m, size, batch) for m in models) + data


MAX_JOBS_ASKED = 256  # runs at once a user may ask for: far beyond any machine's cores or GPU memory


def resolve_jobs(jobs: int | str, device: str = "auto", *, params: Profile | None = None,
                 models: Sequence[str] = ()) -> int:
    """``jobs`` as a positive integer (``"auto"``: :func:`auto_jobs`, on CUDA sized by the memory the largest
    run of the profile ``params`` over its ``models`` needs); anything else is a ``ValueError``."""
    if jobs == "auto":
        if params is not None and models and device in ("auto", "cuda") and torch.cuda.is_available():
            need = profile_memory_gib(params, models)
            log.info("--jobs auto: the largest run of this profile needs about %.1f GiB of GPU memory", need)
            return auto_jobs(device, per_job_gib=need)
        return auto_jobs(device)
    if isinstance(jobs, str) and re.fullmatch(r"[1-9][0-9]{0,3}", jobs):  # ASCII digits only, no sign or blank
        jobs = int(jobs)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS_ASKED:
        raise ValueError(f"jobs must be an integer from 1 to {MAX_JOBS_ASKED} or 'auto', got {str(jobs)[:40]!r}")
    return jobs


def threads_per_job(jobs: int) -> int:
    """CPU threads for each of ``jobs`` concurrent runs (the cores split evenly, at least one)."""
    return max(1, (os.cpu_count() or 1) // jobs)


@dataclass(frozen=True)
class Job:
    """One run to train: its configuration and the workspace holding its data and run store (``None``: the
    folders the environment names)."""

    config: RunConfig
    workspace: Workspace | None = None

    def fit(self) -> Run:
        """Train (or reuse) the run here."""
        where = self.workspace or Workspace.resolve()
        return fit(self.config, data_dir=where.data, runs_dir=where.runs)


def train_in_child(config: dict[str, Any], workspace: Workspace | None, threads: int,
                    epoch_estimate: float | None = None) -> tuple[str, bool]:
    """Worker: train (or reuse) one run with ``threads`` CPU threads; return its folder and whether it trained.
    ``epoch_estimate``: a window's estimate of one epoch's seconds, for the deadline check before the first."""

    os.environ.update(current_policy().replace(epoch_estimate=epoch_estimate).env())
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    run = Job(RunConfig.from_dict(config), workspace).fit()
    return str(run.path), run.trained


def train_many(jobs_list: Sequence[Job], *, jobs: int = 1, threads: int | None = None) -> dict[int, bool]:
    """Train every job, ``jobs`` at a time, each in a fresh process; return ``{position: trained}``.

    With ``jobs=1`` the runs train in this process, one after another. The first failure
    cancels the runs not yet started and is raised (runs already training finish their
    current epoch checkpoints and stay resumable).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    unique: dict[tuple, int] = {}
    for i, job in enumerate(jobs_list):  # the same run asked twice is trained once
        unique.setdefault((job.config.to_dict().__repr__(), job.workspace), i)
    todo = sorted(unique.values())
    threads = threads or threads_per_job(jobs)
    trained: dict[int, bool] = {}
    if jobs == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for i in todo:
                trained[i] = jobs_list[i].fit().trained
        finally:
            torch.set_num_threads(before)
        return trained
    log.info("training %d run(s), %d at a time with %d CPU thread(s) each", len(todo), jobs, threads)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: safe with CUDA
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(train_in_child, jobs_list[i].config.to_dict(), jobs_list[i].workspace, threads): i
                   for i in todo}
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
        for future in done:
            path, was_trained = future.result()  # raises the first failure
            trained[futures[future]] = was_trained
            log.info("%s %s", "trained" if was_trained else "reused", os.path.basename(path))
    return trained
