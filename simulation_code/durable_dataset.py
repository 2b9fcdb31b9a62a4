"""Crash-safe recording into a LeRobotDataset: every completed episode survives SIGKILL and a full disk.

LeRobot 0.6.1 keeps its parquet writers open and buffers episode metadata until ``finalize()``, so a
process killed mid-recording leaves files without a footer and a dataset that does not load; a kill
during a ``--resume`` append can also ruin the episodes that were there before. This module keeps
using LeRobot's own writer (``LeRobotDataset.create / resume / add_frame / save_episode /
finalize``) but never lets it write into the published folder:

* LeRobot writes into a *staging* folder next to the dataset (``.<name>.recording``, hidden).
* The writer's file-size limits are set to 0 in memory, so LeRobot starts new data, video and
  episode-metadata files for every episode and never rewrites a file of an earlier episode (the
  published ``info.json`` keeps LeRobot's usual limits).
* After each episode the staging dataset's parquet writers are closed (metadata flushed), so it is
  a complete dataset on disk, then *published*: a new tree ``.<name>.commit`` is built beside it
  (data and video files hard-linked, metadata copied) and swapped with the dataset folder in one
  atomic ``renameat2(RENAME_EXCHANGE)`` (``renamex_np(RENAME_SWAP)`` on macOS; elsewhere two
  renames, repaired on the next start).
* At every instant the dataset folder holds exactly the episodes published so far, loadable with
  ``LeRobotDataset(repo_id, root=DIR)``; a kill or ENOSPC loses at most the episode being saved.
  Leftover hidden folders are cleaned up by the next run on the same dataset (:func:`recover`).

Cost: closing the writers and publishing after each episode (``benchmarks/bench_recording.py``,
figures in ``docs/reliability.md``), and one data, metadata and video file per episode (per camera).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

#: Top-level folders of a LeRobot v3 dataset whose files are written once and never modified by this
#: module's regime (a resumed writer always starts new files): hard-linked when publishing.
IMMUTABLE_DIRS = ("data", "videos")
#: LeRobot's temporary per-frame PNGs (deleted after encoding); never published.
SCRATCH_DIRS = ("images",)


class DiskFullError(OSError):
    """The disk filled up while saving an episode; the published episodes are intact."""


def staging_path(root: Path) -> Path:
    """``.<name>.recording`` beside ``root``: where LeRobot writes (same filesystem, for hard links)."""
    root = Path(root)
    return root.parent / f".{root.name}.recording"


def _commit_path(root: Path) -> Path:
    return root.parent / f".{root.name}.commit"


def _aside_path(root: Path) -> Path:
    return root.parent / f".{root.name}.old"


#: Below this many free bytes on the dataset's filesystem, a write failure is reported as a full
#: disk even when the library that failed hid the ENOSPC (LeRobot's image writer logs it, and the
#: truncated PNG then fails to decode).
NEARLY_FULL_BYTES = 4 * 2**20


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """True when ``exc`` or an exception in its cause/context chain is ENOSPC (or EDQUOT), or when
    ``path``'s filesystem has less than :data:`NEARLY_FULL_BYTES` free."""
    if path is not None:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(path).free < NEARLY_FULL_BYTES:
                return True
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def recover(root: Path) -> None:
    """Clean up what a killed run left beside ``root`` (idempotent, run before any recording).

    * ``.<name>.old`` (the two-rename fallback was cut between its renames): put back if ``root`` is
      missing, else deleted.
    * ``.<name>.commit`` (a half-built or a replaced snapshot): deleted; ``root`` is always complete.
    * ``.<name>.recording`` (the staging dataset): deleted; its published part is in ``root``.
    """
    root = Path(root)
    aside = _aside_path(root)
    if aside.exists():
        if root.exists():
            shutil.rmtree(aside)
        else:
            os.rename(aside, root)
    for leftover in (_commit_path(root), staging_path(root)):
        if leftover.exists():
            shutil.rmtree(leftover)


def _link_or_copy(src: str, dst: str, *, base: Path) -> None:
    top = Path(src).relative_to(base).parts[0]
    if top in IMMUTABLE_DIRS:
        try:
            os.link(src, dst)
            return
        except OSError as e:  # a filesystem without hard links: copy instead
            if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
    shutil.copy2(src, dst)


def clone_tree(src: Path, dst: Path) -> None:
    """Copy the dataset at ``src`` to ``dst`` (must not exist): files under :data:`IMMUTABLE_DIRS`
    hard-linked, everything else copied, :data:`SCRATCH_DIRS` skipped."""
    src, dst = Path(src), Path(dst)

    def ignore(folder, names):
        return [n for n in names if Path(folder) == src and n in SCRATCH_DIRS]

    shutil.copytree(src, dst, ignore=ignore, copy_function=lambda s, d: _link_or_copy(s, d, base=src))


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False when the platform/filesystem cannot."""
    libc = _libc()
    if libc is None:
        return False
    fa, fb = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2  # <fcntl.h> AT_FDCWD, <linux/fs.h> RENAME_EXCHANGE
        rc = libc.renameat2(at_fdcwd, fa, at_fdcwd, fb, rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(fa, fb, 0x2)  # <stdio.h> RENAME_SWAP
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def publish(staging: Path, root: Path, info: dict | None = None) -> None:
    """Make ``root`` a copy of the closed dataset at ``staging`` in one atomic step; ``info`` entries
    overwrite those of the copied ``meta/info.json``.

    Raises:
        OSError: including ENOSPC; ``root`` then still holds what it held before.
    """
    staging, root = Path(staging), Path(root)
    new = _commit_path(root)
    if new.exists():
        shutil.rmtree(new)
    clone_tree(staging, new)
    if info:
        path = new / "meta" / "info.json"
        path.write_text(json.dumps(dict(json.loads(path.read_text()), **info), indent=4))
    if not root.exists():
        os.rename(new, root)
        return
    if not _exchange(new, root):  # fallback: a window between two renames, repaired by recover()
        aside = _aside_path(root)
        os.rename(root, aside)
        os.rename(new, root)
        new = aside
    shutil.rmtree(new, ignore_errors=True)


class DurableRecording:
    """A LeRobotDataset being recorded episode by episode, published after every episode.

    Args:
        root: the dataset folder users load (``LeRobotDataset(repo_id, root=root)``).
        repo_id: LeRobot repo id stored in the metadata.
        mode: ``"create"`` (``root`` must not exist), ``"overwrite"`` (an existing dataset at
            ``root`` is replaced when the first new episode is published, not before) or
            ``"resume"`` (append to the dataset at ``root``).
        create_kwargs: passed to ``LeRobotDataset.create`` (``fps``, ``features``, ``robot_type``,
            ``use_videos``) for create/overwrite.

    Raises:
        FileExistsError: ``mode="create"`` and ``root`` exists.
        FileNotFoundError: ``mode="resume"`` and ``root`` is not a LeRobot dataset.
    """

    def __init__(self, root: Path, repo_id: str, mode: str, create_kwargs: dict | None = None):
        from lerobot.datasets import LeRobotDataset

        logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)  # torchcodec -> pyav notice
        self.root, self.repo_id = Path(root), repo_id
        self.staging = staging_path(self.root)
        recover(self.root)
        if mode == "resume":
            if not (self.root / "meta" / "info.json").is_file():
                raise FileNotFoundError(f"{self.root} is not a LeRobot dataset (no meta/info.json)")
            clone_tree(self.root, self.staging)
            self.ds = LeRobotDataset.resume(repo_id, root=self.staging)
        elif mode in ("create", "overwrite"):
            if mode == "create" and self.root.exists():
                raise FileExistsError(f"{self.root} exists")
            self.staging.parent.mkdir(parents=True, exist_ok=True)
            self.ds = LeRobotDataset.create(repo_id=repo_id, root=self.staging, **(create_kwargs or {}))
        else:
            raise ValueError(f"mode must be create, overwrite or resume, not {mode!r}")
        info = self.ds.meta.info
        self._file_limits = {"data_files_size_in_mb": info.data_files_size_in_mb,
                             "video_files_size_in_mb": info.video_files_size_in_mb}
        info.data_files_size_in_mb = info.video_files_size_in_mb = 0  # a new file for every episode

    @property
    def meta(self):
        """LeRobot metadata of the dataset being recorded (published episodes + nothing pending)."""
        return self.ds.meta

    def add_frame(self, frame: dict) -> None:
        """``LeRobotDataset.add_frame`` on the staging dataset (see LeRobot for the frame layout).

        Raises:
            DiskFullError: as :meth:`save_episode`.
        """
        try:
            self.ds.add_frame(frame)
        except Exception as e:
            self._fail(e)

    def _fail(self, e: Exception):
        """Drop the (now unusable) writer and re-raise ``e``, as :class:`DiskFullError` when it is one."""
        self.ds = None
        if is_disk_full(e, self.staging.parent):
            raise DiskFullError(errno.ENOSPC, f"no space left on device while recording into {self.root}") from e
        raise e

    def discard_episode(self) -> bool:
        """Drop the frames of the unfinished episode (nothing was published for it); True when there
        were any. A no-op after a failed save (the writer is gone; nothing of it was published)."""
        if self.ds is None or not self.ds.has_pending_frames():
            return False
        self.ds.clear_episode_buffer()
        return True

    def save_episode(self, before_publish: Callable[[Path], None] | None = None) -> int:
        """Encode and write the buffered episode, close its files and publish it; returns its index.

        ``before_publish`` is called with the staging root once the episode is finalized and before
        it is published (to write sidecar files such as a dataset card into the staging folder).

        Raises:
            DiskFullError: the disk filled up; the dataset at ``root`` holds every episode published
                before this one, and this object must not be used further (call :meth:`close`).
            Exception: anything else LeRobot raises; same guarantee for ``root``.
        """
        try:
            self.ds.save_episode(parallel_encoding=False)  # one process: Ctrl-C never reaches encoder workers
            index = self.ds.meta.total_episodes - 1
            self.ds.writer.close_writer()  # the data parquet gets its footer
            self.ds.meta._close_writer()  # episode metadata flushed and closed (LeRobot 0.6.1 internals)
            if before_publish is not None:
                before_publish(self.staging)
            publish(self.staging, self.root, self._file_limits)
        except Exception as e:
            self._fail(e)
        return index

    def close(self) -> None:
        """Drop any unfinished episode and the staging folder (``root`` keeps every published episode)."""
        if self.ds is not None:
            with contextlib.suppress(Exception):
                self.discard_episode()
            with contextlib.suppress(Exception):
                self.ds.finalize()
            self.ds = None
        shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(_commit_path(self.root), ignore_errors=True)

