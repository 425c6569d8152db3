"""Shared fixtures: a tiny hand-made FSDKaggle2019 root written with soundfile, hostile WAV files, and the tiny DVC
pipeline that the pytest-xdist workers share; the workers' schedule (the cost table below, tests/cost_schedule.py)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # before numpy and torch start their thread pools
    # Workers share the cores: each gets its share of threads (and so do the stages it runs), so that no OpenMP
    # pool spins waiting for cores another worker holds.
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from cost_schedule import CostScheduling, ScheduleReport, split_files
from filelock import FileLock
from pipeline import make_repo, repro

from fsdlib.audio import SAMPLE_RATE
from fsdlib.vocabulary import CLASSES_80

CLASSES = CLASSES_80[:4]
ACCEPTED = {  # hostile but valid WAVs, name: (seconds, sample rate, channels, subtype)
    "short_0.05s.wav": (0.05, 44100, 1, "PCM_16"),
    "long_30s.wav": (30.0, 44100, 1, "PCM_16"),
    "pcm_u8.wav": (0.3, 44100, 1, "PCM_U8"),
    "pcm_24.wav": (0.3, 44100, 1, "PCM_24"),
    "float32.wav": (0.3, 44100, 1, "FLOAT"),
    "stereo.wav": (0.3, 44100, 2, "PCM_16"),
    "six_channels.wav": (0.3, 44100, 6, "PCM_16"),
    "rate_8k.wav": (0.3, 8000, 1, "PCM_16"),
    "rate_22k.wav": (0.3, 22050, 1, "PCM_16"),
    "rate_96k.wav": (0.3, 96000, 1, "PCM_16"),
    "spaces and ünïcödé 音.wav": (0.3, 44100, 1, "PCM_16"),
}


def write_wav(path: Path, seconds: float = 0.5, sr: int = 44100, channels: int = 1, subtype: str = "PCM_16",
              seed: int = 0) -> Path:
    """A short noise WAV in the requested format."""
    rng = np.random.default_rng(seed)
    data = 0.1 * rng.standard_normal((max(1, int(seconds * sr)), channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data if channels > 1 else data[:, 0], sr, subtype=subtype)
    return path


def accepted_wavs(folder: Path) -> dict[str, Path]:
    """Every file of ACCEPTED, and a silent one ("silent.wav", 0.5 s of zeros)."""
    out = {name: write_wav(folder / name, seconds=s, sr=sr, channels=ch, subtype=st, seed=i)
           for i, (name, (s, sr, ch, st)) in enumerate(ACCEPTED.items())}
    silent = folder / "silent.wav"
    sf.write(str(silent), np.zeros(SAMPLE_RATE // 2, np.int16), SAMPLE_RATE, subtype="PCM_16")
    out["silent.wav"] = silent
    return out


def refused_wavs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Broken .wav files and the words the error about each must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "good_source.wav", seconds=0.3).read_bytes()
    cases = {
        "truncated.wav": (good[: len(good) // 2], "truncated"),
        "zero_bytes.wav": (b"", "empty file"),
        "wrong_header.wav": (b"RIFX" + good[4:8] + b"JUNK" + good[12:], "not a WAV"),
        "text.wav": (b"hello, I am not audio at all\n" * 10, "not a WAV"),
        "bad_format_chunk.wav": (good[:20] + b"\xff\xff" + good[22:], "unreadable"),
    }
    out = {}
    for name, (data, words) in cases.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, words)
    (folder / "good_source.wav").unlink()
    return out


def make_root(root: Path, n_curated: int = 10, n_noisy: int = 10, n_test: int = 4, test_labels: bool = True) -> Path:
    """Write a minimal valid dataset root with 4 classes."""
    rng = np.random.default_rng(1)
    rows = {}
    for subset, n in (("curated", n_curated), ("noisy", n_noisy), ("test", n_test)):
        names = [f"{subset[0]}{i:07d}.wav" for i in range(n)]
        labels = [",".join(sorted(set(rng.choice(CLASSES, size=rng.integers(1, 3)).tolist()))) for _ in names]
        folder = root / ("test" if subset == "test" else f"train_{subset}")
        for i, f in enumerate(names):
            write_wav(folder / f, seconds=0.2 + 0.1 * (i % 3), seed=i)
        rows[subset] = pd.DataFrame({"fname": names, "labels": labels})
    rows["curated"].to_csv(root / "train_curated.csv", index=False)
    rows["noisy"].to_csv(root / "train_noisy.csv", index=False)
    sub = pd.DataFrame({"fname": rows["test"]["fname"], **{c: 0.0 for c in CLASSES}})
    sub.to_csv(root / "sample_submission.csv", index=False)
    if test_labels:
        test = rows["test"].assign(usage=["Public", "Private"] * (n_test // 2) + ["Private"] * (n_test % 2),
                                   freesound_id=range(n_test), license="CC0")
        test.to_csv(root / "test_post_competition.csv", index=False)
    return root


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


# Seconds each test file takes, for the pytest-xdist schedule (tests/cost_schedule.py): units go out the longest
# first, those of the tiny pipeline once it is built. The files listed test by test ("file::function") are split:
# their tests go out one by one, to either worker (each sets up what it needs itself). A file not listed counts
# DEFAULT_S_PER_TEST a test. Measured in a whole run on the 2-core machine (other users' load included, so about
# 1.5x what each takes alone; the order is what counts).
# Refresh: `FSD_SCHEDULE_REPORT=1 pytest` prints at its end which worker ran what when, and this table measured in
# that run (a test's wait for the pipeline build left out): paste it here when files come or go or change much in
# cost; keep the split files' entries test by test.
COSTS = {
    "test_import.py": 296.3,
    "test_gpu_paths.py": 137,  # in that run its two GPU smoke tests failed early: the run before
    "test_experiments.py::test_experiment_runs_only_dependent_stages": 78.9,
    "test_pipeline_contract.py": 72.3,
    "test_distributed.py": 67.6,
    "test_experiments.py::test_queued_experiments_run_two_at_a_time_and_plots_diff_renders": 65.3,
    "test_fold_workers.py::test_killed_stage_resumes_every_fold_to_the_same_weights": 54.6,
    "test_pipeline.py::test_model_param_reruns_only_that_model": 45.8,
    "test_pipeline.py::test_same_params_give_identical_outputs": 45.7,
    "test_interrupt.py": 45.1,
    "test_resources.py": 42.9,
    "test_scale_memory.py": 36.0,
    "test_data_parallel_shards.py": 35.6,
    "test_pipeline.py::test_temperature_reruns_pseudo_labels_and_students_only": 25.9,
    "test_wave_ref.py": 22.9,
    "test_bench_paper_scale.py": 20.3,
    "test_dvc_yaml.py": 17.0,
    "test_fold_workers.py::test_concurrent_folds_match_folds_one_after_another": 16.9,
    "test_cli_contract.py": 14.0,
    "test_field_dataset.py": 12.3,
    "test_tag_audio.py": 11.9,
    "test_selection.py": 11.3,
    "test_pipeline.py::test_tag_hostile_folder_reports_bad_files_and_tags_the_rest": 9.0,
    "test_fold_workers.py::test_a_failing_fold_names_itself": 8.2,
    "test_pipeline.py::test_second_repro_does_nothing": 7.1,
    "test_train.py": 6.6,
    "test_pipeline.py::test_tag_demo_test_clip": 6.6,
    "test_scale_dataset.py": 6.4,
    "test_ensemble.py": 6.2,
    "test_batch_mates.py": 5.8,
    "test_validate_every.py": 5.5,
    "test_resume.py": 5.5,
    "test_plots.py": 5.3,
    "test_authors_switches.py": 5.1,
    "test_models.py": 4.8,
    "test_inference.py": 3.3,
    "test_synth.py": 2.5,
    "test_pipeline.py::test_pipeline_outputs": 2.2,
    "test_onnx_tagger.py": 90.0,
    "test_features.py": 1.9,
    "test_distill.py": 1.4,
    "test_dataset.py": 1.4,
    "test_audio.py": 1.1,
    "test_init_from.py": 0.8,
    "test_fold_data.py": 0.8,
    "test_cli_errors.py": 0.7,
    "test_augment.py": 0.5,
    "test_batch_maker.py": 0.5,
    "test_paper_params.py": 0.5,
    "test_fusion.py": 0.4,
    "test_pipeline_report.py": 0.3,
    "test_paper_tables.py": 0.2,
    "test_store.py": 0.2,
    "test_folds.py": 0.1,
    "test_metrics.py": 0.1,
    "test_device.py": 0.1,
    "test_pseudo.py": 0.1,
    "test_losses.py": 0.1,
    "test_fit_weights.py": 0.1,
    "test_schedule.py": 0.1,
    "test_tagger.py": 0.1,
    "test_fold_workers.py::test_bad_placement_is_one_clear_error": 0.1,
    "test_fold_workers.py::test_gpu_workers_share_a_gpu_and_spread_over_several": 0.1,
    "test_fold_workers.py::test_cpu_workers_times_threads_fill_the_cores": 0.1,
}
PIPELINE_FIXTURE = "tiny_pipeline"


class PipelineBuildError(RuntimeError):
    """The tiny pipeline could not be built: the message holds the error and DVC's log of the stages."""


def _shared_temp(factory: pytest.TempPathFactory) -> Path:
    """The run's base temporary folder: under pytest-xdist the one above every worker's own (xdist gives worker gwN
    the folder popen-gwN in the controller's), which the controller sees as its own."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _built(shared: Path) -> Path:
    return shared / "tiny_pipeline" / "built"


def _failed(shared: Path) -> Path:
    return shared / "tiny_pipeline.failed"


def _pipeline_tests(shared: Path) -> Path:
    return shared / "tiny_pipeline.tests.json"


def build_tiny_pipeline(shared: Path) -> Path:
    """The tiny pipeline (tests/pipeline.py) under `shared`, built once: the first caller builds it while the others
    wait on a file lock. A failed build is not tried again: every caller gets its error (and DVC's stage log)."""
    path, built, failed = shared / "tiny_pipeline" / "repo", _built(shared), _failed(shared)
    with FileLock(str(shared / "tiny_pipeline.lock")):
        if failed.exists():
            raise PipelineBuildError(failed.read_text())
        if not built.exists():
            shutil.rmtree(path.parent, ignore_errors=True)
            try:
                ran = repro(make_repo(path))
                if "synth" not in ran or "ensemble" not in ran:
                    raise PipelineBuildError(f"dvc repro ran only {ran}")
            except Exception as exc:
                failed.write_text(f"building the tiny pipeline in {path} failed: {type(exc).__name__}: {exc}")
                raise
            built.touch()
    return path


class _BackgroundBuild(threading.Thread):
    """build_tiny_pipeline in a thread (it waits on DVC's processes), keeping its exception for the fixture."""

    def __init__(self, shared: Path) -> None:
        super().__init__(name="tiny pipeline build", daemon=True)
        self.shared, self.error = shared, None

    def run(self) -> None:
        try:
            build_tiny_pipeline(self.shared)
        except Exception as exc:  # noqa: BLE001 - re-raised by the tiny_pipeline fixture
            self.error = exc


BACKGROUND_BUILD = pytest.StashKey[_BackgroundBuild]()
_PIPELINE_WAIT: list[float] = []  # seconds the tiny_pipeline fixture took, for the setup report of its first test


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses the tiny pipeline is `slow`; under pytest-xdist the controller's scheduler learns which
    they are from a file (it does not collect)."""
    uses = [item for item in items if PIPELINE_FIXTURE in getattr(item, "fixturenames", ())]
    for item in uses:
        item.add_marker(pytest.mark.slow)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        target = _pipeline_tests(_shared_temp(config._tmp_path_factory))
        tmp = target.with_name(f"{target.name}.{os.environ['PYTEST_XDIST_WORKER']}")
        tmp.write_text(json.dumps([item.nodeid for item in uses]))
        os.replace(tmp, target)  # whole, whichever worker writes last: they collect the same tests


@pytest.hookimpl(optionalhook=True)  # no hook without xdist (-p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> CostScheduling | None:
    """`--dist loadfile` (pyproject.toml) with units and their order by cost (tests/cost_schedule.py); any other
    --dist mode is xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    shared = config._tmp_path_factory.getbasetemp()  # what the workers' _shared_temp gives
    tests = _pipeline_tests(shared)
    sched = CostScheduling(config, log, COSTS, lambda: _built(shared).exists() or _failed(shared).exists(),
                           lambda: set(json.loads(tests.read_text())) if tests.exists() else set())
    config.stash[SCHEDULER] = sched
    return sched


SCHEDULER = pytest.StashKey[CostScheduling]()


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("FSD_SCHEDULE_REPORT") and not os.environ.get("PYTEST_XDIST_WORKER"):
        config.pluginmanager.register(_ReportHooks(ScheduleReport(split_files(COSTS))), "fsd-schedule-report")


class _ReportHooks:
    """FSD_SCHEDULE_REPORT=1: the controller's record of the run, printed at its end (tests/cost_schedule.py)."""

    def __init__(self, report: ScheduleReport) -> None:
        self.report = report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.report.add(report)

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config) -> None:
        terminalreporter.write_sep("=", "schedule (FSD_SCHEDULE_REPORT)")
        sched = config.stash.get(SCHEDULER, None)
        for line in self.report.lines(sched.assignments if sched is not None else []):
            terminalreporter.write_line(line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """The setup report of the test that first asked for the tiny pipeline on this worker tells how long that took
    (the build, or the wait for it): the schedule report leaves it out of the test's cost."""
    report = yield
    if call.when == "setup" and _PIPELINE_WAIT:
        report.user_properties.append((ScheduleReport.WAIT, _PIPELINE_WAIT.pop()))
    return report


@pytest.fixture(scope="session", autouse=True)
def _build_tiny_pipeline_early(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Under pytest-xdist, worker gw0 starts building the tiny pipeline at once, in a thread, while the workers run
    the other tests (the scheduler holds back the pipeline's tests until it is built); the fixture below then finds
    it built, or waits for it, or raises the build's error."""
    build = None
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw0" and any(
            PIPELINE_FIXTURE in getattr(item, "fixturenames", ()) for item in request.session.items):
        build = request.config.stash[BACKGROUND_BUILD] = _BackgroundBuild(_shared_temp(tmp_path_factory))
        build.start()
    yield
    if build is not None:
        build.join()


@pytest.fixture(scope="session")
def tiny_pipeline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline, run once per test run and shared by the pytest-xdist workers. Read it as it is; a test
    that changes anything works on a `pipeline.copy_repo` of it. Every test that uses it is marked `slow`."""
    started = time.monotonic()
    try:
        build = request.config.stash.get(BACKGROUND_BUILD, None)
        if build is not None:
            build.join()
            if build.error is not None:
                raise PipelineBuildError(f"the background build of the tiny pipeline failed: {build.error}") \
                    from build.error
        return build_tiny_pipeline(_shared_temp(tmp_path_factory))
    finally:
        _PIPELINE_WAIT.append(time.monotonic() - started)


def random_truth(rng: np.random.Generator, n: int = 300, c: int = 12) -> np.ndarray:
    """Multi-hot labels: every clip one label, some a few more."""
    truth = rng.random((n, c)) < 0.05
    truth[np.arange(n), rng.integers(0, c, n)] = True
    return truth


def noisy_scores(rng: np.random.Generator, truth: np.ndarray, signal: float) -> np.ndarray:
    """Probabilities whose logits are `signal` × truth plus unit Gaussian noise (signal 0: an untrained snapshot)."""
    return 1.0 / (1.0 + np.exp(-(signal * truth + rng.standard_normal(truth.shape))))
